"""vLLM's plan: which wheel the driver runs, whether the model fits, how it shares the GPU.

Pure: decided from the host's facts and settings, with every number from
``gpulab.compat.vllm_tables``. Refusals are ``VllmRefused`` naming the key to change; the host
plan turns them into its own ``PlanError``.

The wheel rule: the release's builds are tried default first; a build whose CUDA release's
Table 3 minimum the driver meets is taken, else one that runs under CUDA minor-version
compatibility (the driver meets its CUDA major's floor), else the host is refused.
"""

from __future__ import annotations

import math
import shlex
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from gpulab.compat.cuda import CompatError, Platform, minor_version_floor
from gpulab.compat.tables import CUDA_TOOLKITS, Family
from gpulab.compat.versions import parse_version
from gpulab.compat.vllm_tables import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_VLLM_VERSION,
    FAMILY_MIN_COMPUTE_CAPABILITY,
    HF_MODELS,
    VLLM_RELEASES,
    VLLM_RUNTIME_MARGIN_MIB,
    HfModel,
    VllmRelease,
    WheelBuild,
)
from gpulab.facts.model import HostFacts
from gpulab.models.catalog import KNOWN_MODELS, RUNTIME_OVERHEAD
from gpulab.plan.ollama import proxy_environment
from gpulab.settings import Settings

MIB = 2**20
SERVICE = "vllm.service"
USER = "vllm"
HOME = "/var/lib/vllm"
UNIT_PATH = "/etc/systemd/system/vllm.service"
ENV_FILE = "/etc/gpulab/vllm.env"


class VllmRefused(ValueError):
    """vLLM cannot run on this host as the data asks; ``field`` is the key to change."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


class VllmPlan(BaseModel):
    """vLLM on one host: the wheel, the service and the memory it may take.

    ``model``, ``listen_host``, ``listen_port`` and ``api_key_required`` are what a check of
    the running service needs (``/v1/models`` lists ``model``; without the key, 401).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool
    remove: bool = False
    version: str | None = None
    torch: str | None = None
    wheel_cuda: str | None = None
    wheel_index: Literal["pypi", "variant"] | None = None
    requirement: str | None = None  # "vllm==0.26.0+cu129"
    index_url: str | None = None  # None: pip's default index
    extra_index_urls: tuple[str, ...] = ()
    model: str | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8000
    api_key_required: bool = False
    max_model_len: int = 8192
    gpu_memory_utilization: float | None = None
    shares_gpu_with_ollama: bool = False
    fits_gpu: bool | None = None
    service_can_run: bool = False
    reason: str
    memory_reason: str = ""

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API, as clients on the host reach it."""
        host = "127.0.0.1" if self.listen_host in ("0.0.0.0", "::") else self.listen_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.listen_port}/v1"


def find_vllm_release(version: str) -> VllmRelease:
    """The table's row for ``version``, or a refusal naming the versions gpulab knows."""
    for release in VLLM_RELEASES:
        if release.version == version:
            return release
    offered = ", ".join(release.version for release in VLLM_RELEASES)
    raise VllmRefused(
        "vllm_version",
        f"vLLM {version} is not in gpulab's table, so the CUDA of its wheels is unknown; "
        f"offered: {offered}",
    )


def _native_minimum(build: WheelBuild, platform: Platform) -> str | None:
    """Table 3's minimum for the first update of the build's CUDA release (X.Y.0): later
    updates of the same release run on it under minor-version compatibility anyway."""
    rows = [row for row in CUDA_TOOLKITS if row.version.startswith(build.cuda + ".")]
    if not rows:
        raise CompatError(f"CUDA {build.cuda} is not in Table 3")
    first = rows[-1]
    return first.linux_min if platform == "linux" else first.windows_min


def _minor_floor(build: WheelBuild, platform: Platform) -> str | None:
    try:
        return minor_version_floor(int(build.cuda.split(".")[0]), platform)
    except CompatError:
        return None


def choose_wheel(
    release: VllmRelease, driver_version: str, platform: Platform
) -> tuple[WheelBuild, str]:
    """The build of ``release`` the driver runs, and why; ``VllmRefused`` when none.

    >>> choose_wheel(find_vllm_release("0.26.0"), "550.54.14", "linux")[0].tag
    'cu129'
    """
    have = parse_version(driver_version)
    for build in release.builds:
        minimum = _native_minimum(build, platform)
        if minimum is not None and have >= parse_version(minimum):
            return build, f"driver {driver_version} meets CUDA {build.cuda}'s {minimum}"
    for build in release.builds:
        floor = _minor_floor(build, platform)
        if floor is not None and have >= parse_version(floor):
            return build, (f"CUDA {build.cuda} under minor-version compatibility: driver "
                           f"{driver_version} meets the {build.cuda.split('.')[0]}.x floor {floor}")
    needs = "; ".join(
        f"CUDA {build.cuda} needs {_native_minimum(build, platform) or 'a newer driver'}"
        f" (or {_minor_floor(build, platform)} under minor-version compatibility)"
        for build in release.builds
    )
    raise VllmRefused(
        "vllm_version",
        f"driver {driver_version} ({platform}) is too old for vLLM {release.version}'s wheels "
        f"({needs}): choose a newer driver_branch, or pin an older vllm_version",
    )


def _requirement(release: VllmRelease, build: WheelBuild) -> str:
    local = f"+{build.tag}" if build.source == "variant" else ""
    return f"vllm=={release.version}{local}"


def _extra_indexes(settings: Settings, release: VllmRelease, build: WheelBuild) -> tuple[str, ...]:
    if build.source == "pypi":
        return ()
    return (f"{settings.vllm_wheel_index_base}/{release.version}/{build.tag}",
            f"{settings.vllm_torch_index_base}/{build.tag}")


def _check_compute_capability(families: Iterable[Family], release: VllmRelease) -> None:
    floor = release.min_compute_capability
    for family in families:
        have = FAMILY_MIN_COMPUTE_CAPABILITY.get(family.name, (0, 0))
        if have < floor:
            older = [r.version for r in VLLM_RELEASES if have >= r.min_compute_capability]
            hint = (f"pin vllm_version: {older[0]} (compute capability "
                    f"{_cc(have)} is enough there)" if older else "set vllm_enabled: false")
            raise VllmRefused(
                "vllm_version",
                f"{family.name} GPUs (compute capability {_cc(have)}) are below vLLM "
                f"{release.version}'s floor {_cc(floor)}: {hint}",
            )


def _cc(value: tuple[int, int]) -> str:
    return f"{value[0]}.{value[1]}"


def model_need_mib(model: HfModel, max_model_len: int) -> int:
    """Weights, the KV cache of one ``max_model_len`` sequence, and gpulab's margin, in MiB.

    vLLM refuses to start when its KV cache cannot hold one sequence of ``--max-model-len``.

    >>> model_need_mib(HF_MODELS["Qwen/Qwen2.5-7B-Instruct-AWQ"], 8192)
    7306
    """
    cache = model.kv_cache_bytes(max_model_len)
    return math.ceil((model.weights_bytes + cache) / MIB) + VLLM_RUNTIME_MARGIN_MIB


def ollama_reserve_mib(settings: Settings) -> tuple[int, str]:
    """GPU memory Ollama's largest course model takes when loaded, and its name (0 if none)."""
    if settings.ollama_state != "present":
        return 0, ""
    known = [KNOWN_MODELS[name] for name in settings.models if name in KNOWN_MODELS]
    if not known:
        return 0, ""
    largest = max(known, key=lambda model: model.size_bytes)
    return math.ceil(largest.size_bytes * RUNTIME_OVERHEAD / MIB), largest.name


def _utilization(
    settings: Settings, vram_mib: int, reserve_mib: int, reserve_name: str
) -> float:
    """The fraction of the GPU vLLM may take; refused when Ollama's model cannot fit beside."""
    chosen = settings.vllm_gpu_memory_utilization
    if reserve_mib == 0:
        return chosen or DEFAULT_GPU_MEMORY_UTILIZATION
    left = math.floor((vram_mib - reserve_mib) / vram_mib * 100) / 100
    if chosen is None:
        chosen = min(DEFAULT_GPU_MEMORY_UTILIZATION, left)
    if chosen <= 0 or chosen > left:
        raise VllmRefused(
            "vllm_gpu_memory_utilization",
            f"Ollama's {reserve_name} takes ~{reserve_mib} MiB of the GPU's {vram_mib} MiB, "
            f"leaving at most {max(left, 0):.2f} of it for vLLM, not {chosen:.2f}: vLLM and "
            "Ollama cannot share this GPU so; lower it, or set ollama_state: absent",
        )
    return chosen


def _memory(
    settings: Settings, facts: HostFacts
) -> tuple[float, bool, bool | None, str]:
    """(utilization, shared with Ollama, fits, why)."""
    reserve_mib, reserve_name = ollama_reserve_mib(settings)
    shared = reserve_mib > 0
    sizes = [gpu.memory_total_mib for gpu in facts.smi.gpus if gpu.memory_total_mib]
    if not sizes:
        utilization = settings.vllm_gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION
        return utilization, shared, None, ("GPU memory unknown until the driver runs: run "
                                           "gpulab again after it does to check the fit")
    vram_mib = min(sizes)
    utilization = _utilization(settings, vram_mib, reserve_mib, reserve_name)
    budget = math.floor(vram_mib * utilization)
    beside = f", beside Ollama's {reserve_name} (~{reserve_mib} MiB)" if shared else ""
    name = settings.vllm_model or ""
    model = HF_MODELS.get(name)
    if model is None:
        return utilization, shared, None, (
            f"{budget} MiB at {utilization:.2f}{beside}; gpulab has no config data for {name}: "
            "vLLM checks the fit when it starts")
    need = model_need_mib(model, settings.vllm_max_model_len)
    if need <= budget:
        return utilization, shared, True, (
            f"{name} needs ~{need} MiB with {settings.vllm_max_model_len} tokens of KV cache; "
            f"{budget} MiB at {utilization:.2f} of {vram_mib} MiB{beside}")
    numbers = (
        f"{name} needs ~{need} MiB (weights {math.ceil(model.weights_bytes / MIB)} MiB, KV "
        f"cache for {settings.vllm_max_model_len} tokens "
        f"{math.ceil(model.kv_cache_bytes(settings.vllm_max_model_len) / MIB)} MiB, margin "
        f"{VLLM_RUNTIME_MARGIN_MIB} MiB) but gets {budget} MiB at {utilization:.2f} of the "
        f"GPU's {vram_mib} MiB{beside}"
    )
    smaller = [q for q in model.quantized
               if model_need_mib(HF_MODELS[q], settings.vllm_max_model_len) <= budget]
    if smaller:
        raise VllmRefused("vllm_model", f"{numbers}: use {smaller[0]}, which fits")
    hint = ("set ollama_state: absent or serve a smaller model" if shared
            else "serve a smaller model, or lower vllm_max_model_len")
    raise VllmRefused("vllm_model", f"{numbers}; no build gpulab knows fits: {hint}")


def plan_vllm(
    facts: HostFacts,
    settings: Settings,
    families: list[Family],
    driver_version: str | None,
    platform: Platform,
) -> VllmPlan:
    """vLLM's plan for a host; ``VllmRefused`` says why it cannot run there.

    ``driver_version`` is the driver the wheels will run on after this run (the planned
    branch's first release, or the Windows driver under WSL2), ``platform`` its numbering.
    """
    can_run = facts.systemd_running and not (facts.wsl and facts.wsl_systemd is False)
    if not settings.vllm_enabled:
        return VllmPlan(enabled=False, remove=settings.vllm_remove, service_can_run=can_run,
                        reason="vllm_enabled is false" + (" (removed)" if settings.vllm_remove
                                                          else ""))
    if not facts.pci_gpus and not facts.smi.gpus:
        raise VllmRefused("vllm_enabled", "no NVIDIA GPU found: vLLM needs one; set "
                                          "vllm_enabled: false for this host")
    if facts.wsl and facts.wsl_systemd is False:
        raise VllmRefused("vllm_enabled", (
            "WSL2 without systemd cannot run vLLM's service: gpulab's Ollama deploy turns "
            "systemd on in /etc/wsl.conf; run `wsl --shutdown` in Windows, then gpulab again"))
    if not facts.systemd_running:
        raise VllmRefused("vllm_enabled", "systemd is not running on this host: vLLM's "
                                          "service cannot start")
    if not families:
        raise VllmRefused("vllm_enabled", "cannot tell the architecture of this host's GPUs, "
                                          "so not their compute capability")
    release = find_vllm_release(settings.vllm_version or DEFAULT_VLLM_VERSION)
    _check_compute_capability(families, release)
    if driver_version is None:
        raise VllmRefused("vllm_enabled", "no NVIDIA driver will run vLLM's CUDA build here: "
                                          "let gpulab install one (driver_source)")
    build, why = choose_wheel(release, driver_version, platform)
    utilization, shared, fits, memory_reason = _memory(settings, facts)
    where = ("the package index" if build.source == "pypi"
             else f"{settings.vllm_wheel_index_base}/{release.version}/{build.tag}")
    return VllmPlan(
        enabled=True, version=release.version, torch=release.torch, wheel_cuda=build.cuda,
        wheel_index=build.source, requirement=_requirement(release, build),
        index_url=settings.vllm_pip_index_url,
        extra_index_urls=_extra_indexes(settings, release, build),
        model=settings.vllm_model, listen_host=settings.vllm_host,
        listen_port=settings.vllm_port,
        api_key_required=settings.vllm_api_key is not None or settings.vllm_api_key_env is not None,
        max_model_len=settings.vllm_max_model_len, gpu_memory_utilization=utilization,
        shares_gpu_with_ollama=shared, fits_gpu=fits, service_can_run=True,
        reason=f"{build.tag} wheel (PyTorch {release.torch}) from {where}: {why}",
        memory_reason=memory_reason,
    )


def resolve_api_key(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """The key from the data, or from the variable ``vllm_api_key_env`` names in ``environ``."""
    if settings.vllm_api_key is not None:
        return settings.vllm_api_key.get_secret_value()
    if settings.vllm_api_key_env is None:
        return None
    value = environ.get(settings.vllm_api_key_env, "")
    if not value:
        raise VllmRefused("vllm_api_key_env", (
            f"the environment variable {settings.vllm_api_key_env} is not set on this machine: "
            "export it before running gpulab"))
    return value


def venv_marker(plan: VllmPlan, packages: tuple[str, ...]) -> str:
    """What a complete virtualenv was installed with; a different text means reinstall."""
    indexes = " ".join((plan.index_url or "default", *plan.extra_index_urls))
    return f"{' '.join(packages)} from {indexes}\n"


def venv_packages(plan: VllmPlan, hub: str) -> tuple[str, ...]:
    """The pinned vLLM, and ModelScope's client when the model comes from there."""
    assert plan.requirement is not None
    return (plan.requirement, "modelscope") if hub == "modelscope" else (plan.requirement,)


def pip_install_command(venv: str, plan: VllmPlan, packages: tuple[str, ...]) -> str:
    """pip into ``venv`` from the planned indexes, retrying.

    >>> pip_install_command("/opt/vllm", VllmPlan(enabled=True, reason=""), ("vllm==0.26.0",))
    '/opt/vllm/bin/pip install --retries 10 --timeout 60 vllm==0.26.0'
    """
    words = [f"{venv}/bin/pip", "install", "--retries", "10", "--timeout", "60"]
    if plan.index_url:
        words += ["--index-url", plan.index_url]
    for url in plan.extra_index_urls:
        words += ["--extra-index-url", url]
    # pip ignores a plain-http index (a LAN mirror) unless its host is trusted.
    for url in (plan.index_url or "", *plan.extra_index_urls):
        if url.startswith("http://"):
            words += ["--trusted-host", urllib.parse.urlsplit(url).netloc]
    return " ".join(shlex.quote(word) for word in (*words, *packages))


def download_command(venv: str, model: str, hub: str) -> str:
    """The model into the shared cache; ``hf download`` resumes a partial download."""
    if hub == "modelscope":
        return f"{venv}/bin/modelscope download --model {shlex.quote(model)}"
    return f"{venv}/bin/hf download {shlex.quote(model)}"


def model_environment(settings: Settings) -> list[tuple[str, str]]:
    """Where the model cache is and which hub fills it: for the download and the service."""
    env = [("HF_HOME", settings.vllm_hf_home),
           ("MODELSCOPE_CACHE", f"{settings.vllm_hf_home}/modelscope")]
    if settings.vllm_hf_endpoint:
        env.append(("HF_ENDPOINT", settings.vllm_hf_endpoint))
    if settings.vllm_hub == "modelscope":
        env.append(("VLLM_USE_MODELSCOPE", "True"))
    return env + proxy_environment(settings)


def serve_arguments(plan: VllmPlan) -> list[str]:
    """``vllm serve``'s arguments; the key is not among them (it reaches vLLM as
    ``VLLM_API_KEY`` from the root-only environment file, never on a command line)."""
    assert plan.model is not None
    return ["serve", plan.model, "--host", plan.listen_host, "--port", str(plan.listen_port),
            "--gpu-memory-utilization", f"{plan.gpu_memory_utilization:.2f}",
            "--max-model-len", str(plan.max_model_len)]
