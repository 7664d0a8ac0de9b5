"""Every inventory data key gpulab reads, validated before any host is touched.

Keys are flat, as pyinfra data is (``group_data`` merges key by key): ``driver_branch``,
``ollama_version``, ... A host's data is the merge of ``all``, its groups and its own data.
Keys with a gpulab prefix that gpulab does not know are errors (a typo must not be silently
ignored); other keys (``ssh_*``, your own) are left alone.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from gpulab.compat.cuda import CompatError, check_pinned_toolkit, find_release
from gpulab.compat.gpus import GpuRuleError, branch
from gpulab.facts.model import FactsFile
from gpulab.models.names import ModelNameError, parse_model_name

GPULAB_PREFIXES = (
    "apt_", "nvidia_", "driver_", "cuda_", "ollama_", "models", "vllm_", "reboot_",
    "https_proxy", "no_proxy", "gpulab_", "room_",
)

OLLAMA_DOWNLOAD_BASE = "https://github.com/ollama/ollama/releases/download"
NVIDIA_REPO_BASE = "https://developer.download.nvidia.com/compute/cuda/repos"
OLLAMA_REGISTRY = "https://registry.ollama.ai"
VLLM_WHEEL_INDEX_BASE = "https://wheels.vllm.ai"
TORCH_INDEX_BASE = "https://download.pytorch.org/whl"
COURSE_MODELS = ("qwen2.5:7b", "znbang/bge:large-zh-v1.5-f16")
# The room cache (deploy/room_cache.py): apt-cacher-ng's own port, and where nginx serves
# the Ollama releases, cuda-keyring and the model store under its document root.
APT_CACHER_PORT = 3142
ROOM_CACHE_PATHS = {"ollama": "/ollama", "nvidia": "/nvidia", "models": "/models",
                    "swarm": "/swarm"}
# Written last by deploy/room_cache.py; hosts check it answers before they use the cache.
ROOM_CACHE_MARKER = "/gpulab-room-cache.txt"
Machine = Literal["x86_64", "aarch64"]
RepoDistro = Literal["ubuntu2204", "ubuntu2404", "debian12", "wsl-ubuntu"]
ROOM_CACHE_MACHINES: tuple[Machine, ...] = ("x86_64",)
ROOM_CACHE_DISTROS: tuple[RepoDistro, ...] = ("ubuntu2204", "ubuntu2404", "debian12",
                                              "wsl-ubuntu")
_DURATION = re.compile(r"^-?\d+(ns|us|ms|s|m|h)?$|^(-?\d+(\.\d+)?(h|m|s))+$")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


OLLAMA_DEFAULT_PORT = 11434
# Ollama's default port per scheme when OLLAMA_HOST names none (envconfig.Host()).
_SCHEME_PORTS = {"http": 80, "https": 443}


def ollama_listen_address(value: str) -> tuple[str, int]:
    """Where ``ollama serve`` listens for this ``OLLAMA_HOST``, by Ollama's own rule.

    ``envconfig.Host()`` in github:ollama/ollama: ``http://`` without a port means port 80,
    ``https://`` 443, anything else 11434; an empty host (``":11434"``) listens on every
    address, as ``0.0.0.0`` does (Go opens one dual-stack socket for both). Ports outside
    1-65535 are refused here (Ollama would silently fall back to its default).

    >>> ollama_listen_address("http://0.0.0.0")
    ('0.0.0.0', 80)
    >>> ollama_listen_address(":11435")
    ('0.0.0.0', 11435)
    >>> ollama_listen_address("[::1]:9000")
    ('::1', 9000)
    """
    text = value.strip().strip("\"'").strip()
    scheme, found, hostport = text.partition("://")
    default_port = OLLAMA_DEFAULT_PORT
    if not found:
        hostport = text
    elif scheme in _SCHEME_PORTS:
        default_port = _SCHEME_PORTS[scheme]
    hostport = hostport.split("/", 1)[0]
    host, port = _split_go_host_port(hostport)
    if port is None:
        host, port = "127.0.0.1", ""
        try:
            host = str(ipaddress.ip_address(hostport.strip("[]")))
        except ValueError:
            if ":" in hostport:
                message = f"{value!r}: write an IPv6 address with a port as [addr]:port"
                raise ValueError(message) from None
            host = hostport or host
    elif not host:
        host = "0.0.0.0"
    if port and not port.isdigit():
        raise ValueError(f"{value!r}: port {port!r} is not a number")
    number = int(port) if port else default_port
    if not 0 < number < 65536:
        raise ValueError(f"{value!r}: port {number} is out of range")
    return host, number


def room_cache_address(value: str) -> tuple[str, int]:
    """``room_cache``'s IP address and nginx port.

    >>> room_cache_address("10.0.0.5")
    ('10.0.0.5', 80)
    >>> room_cache_address("10.0.0.5:8080")
    ('10.0.0.5', 8080)
    """
    host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "80")
    try:
        address = str(ipaddress.IPv4Address(host))
    except ValueError:
        raise ValueError(f"{value!r}: write the cache's IPv4 address, optionally with the "
                         "port of its nginx (10.0.0.5 or 10.0.0.5:8080)") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: port {port!r} is not a port number")
    return address, int(port)


def acng_https_url(url: str) -> str:
    """An HTTPS repository as apt-cacher-ng caches it: ``http://HTTPS///host/path``.

    apt asks the proxy for plain HTTP; apt-cacher-ng fetches it from ``https://host/path``
    (its manual, "SSL/TLS remote repositories"). apt still checks the repository's signature.

    >>> acng_https_url("https://developer.download.nvidia.com/compute/cuda/repos")
    'http://HTTPS///developer.download.nvidia.com/compute/cuda/repos'
    >>> acng_https_url("http://mirror.lab/cuda")
    'http://mirror.lab/cuda'
    """
    scheme, _, rest = url.partition("://")
    return f"http://HTTPS///{rest}" if scheme == "https" else url


def _room_cache_values(settings: Settings) -> dict[str, Any]:
    cache = settings.room_cache_url
    if cache is None or settings.room_cache is None:
        return {}
    host, _ = room_cache_address(settings.room_cache)
    return {
        "apt_proxy": f"http://{host}:{APT_CACHER_PORT}",
        "ollama_download_base": cache + ROOM_CACHE_PATHS["ollama"],
    }


def through_room_cache(settings: Settings) -> Settings:
    """``settings`` with the keys the room cache serves derived from ``room_cache``.

    A key set in the inventory wins. Through the cache's apt-cacher-ng, NVIDIA's HTTPS
    repository (``nvidia_repo_base``, NVIDIA's or a mirror) is reached by its
    ``http://HTTPS///`` route, so the room fetches it once. ``from_room_cache`` tells the plan
    which values came from the cache.

    >>> s = through_room_cache(Settings(room_cache="10.0.0.5", room_cidrs=["10.0.0.0/24"]))
    >>> s.apt_proxy, s.ollama_download_base
    ('http://10.0.0.5:3142', 'http://10.0.0.5/ollama')
    >>> s.nvidia_repo_base
    'http://HTTPS///developer.download.nvidia.com/compute/cuda/repos'
    """
    update = {key: value for key, value in _room_cache_values(settings).items()
              if key not in settings.model_fields_set}
    if "apt_proxy" in update:
        update["nvidia_repo_base"] = acng_https_url(settings.nvidia_repo_base)
    return settings.model_copy(update=update)


def from_room_cache(settings: Settings, key: str) -> bool:
    """Whether ``key`` (``apt_proxy``, ``ollama_download_base``, ``nvidia_repo_base``) is
    reached through the room cache."""
    values = _room_cache_values(settings)
    if key == "nvidia_repo_base":
        return from_room_cache(settings, "apt_proxy")
    return key in values and getattr(settings, key) == values[key]


def upstream_url(url: str) -> str:
    """The real source behind ``acng_https_url``: what the room cache itself fetches.

    >>> upstream_url("http://HTTPS///developer.download.nvidia.com/compute/cuda/repos")
    'https://developer.download.nvidia.com/compute/cuda/repos'
    """
    return "https://" + url.removeprefix("http://HTTPS///") if url.startswith(
        "http://HTTPS///") else url


def _split_go_host_port(hostport: str) -> tuple[str, str | None]:
    """Go's ``net.SplitHostPort``: the port must be explicit, an IPv6 host bracketed."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return (host, rest[1:]) if rest.startswith(":") else ("", None)
    if hostport.count(":") != 1:
        return "", None
    host, port = hostport.split(":")
    return host, port


class Settings(BaseModel):
    """gpulab's inventory data for one host. Each field is one data key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- network: every download location is data -------------------------------------
    apt_proxy: str | None = Field(
        default=None,
        description="HTTP proxy for apt (e.g. an apt-cacher-ng on the LAN: "
        "http://10.0.0.5:3142); written to /etc/apt/apt.conf.d/01gpulab-proxy.",
    )
    apt_lock_timeout: int = Field(
        default=600, ge=0, description="Seconds apt waits for another apt/dpkg to finish."
    )
    apt_cache_time: int = Field(
        default=3600, ge=0, description="Seconds a previous `apt-get update` stays fresh."
    )
    https_proxy: str | None = Field(
        default=None,
        description="Proxy for HTTPS downloads (Ollama archive, registry, NVIDIA's repo "
        "through apt).",
    )
    no_proxy: list[str] = Field(
        default_factory=list, description="Hosts and CIDRs that bypass https_proxy."
    )
    nvidia_repo_base: str = Field(
        default=NVIDIA_REPO_BASE,
        description="Base URL of NVIDIA's CUDA apt repositories (a mirror for slow links); "
        "<base>/<distro>/x86_64/ must hold cuda-keyring_1.1-1_all.deb.",
    )

    # --- NVIDIA driver ------------------------------------------------------------------
    driver_source: Literal["auto", "ubuntu", "cuda-repo", "debian", "none"] = Field(
        default="auto",
        description="Where the driver comes from. auto: Ubuntu's archive on Ubuntu, NVIDIA's "
        "repo on Debian 12 (debian: Debian's own non-free 535, also chosen by driver_branch: "
        "535), none on WSL2 and on hosts without an NVIDIA GPU.",
    )
    driver_branch: int | None = Field(
        default=None, description="Driver branch (535, 550, 570, 580, 590, ...); default "
        "580. Ubuntu's archive has only 535, 580 and 595 as real branches; the others are refused "
        "there (use driver_source: cuda-repo)."
    )
    driver_flavour: Literal["auto", "open", "proprietary"] = Field(
        default="auto",
        description="Kernel modules. auto: open where every GPU allows it and the branch is "
        "560+; Blackwell requires open, Maxwell/Pascal/Volta require proprietary.",
    )
    driver_server: bool = Field(
        default=False, description="Ubuntu: the -server (ERD) driver packages."
    )
    driver_dkms: bool = Field(
        default=False,
        description="Ubuntu: build modules with DKMS instead of Canonical's prebuilt signed "
        "linux-modules-nvidia packages (needs MOK enrollment under Secure Boot).",
    )
    driver_secure_boot_proceed: bool = Field(
        default=False,
        description="Install DKMS-built modules although Secure Boot is on (you enroll the MOK).",
    )
    driver_upgrade: bool = Field(
        default=False,
        description="Lift the driver holds, upgrade within the branch, and hold again; on "
        "Ubuntu's prebuilt modules the held kernel moves with them (then a reboot).",
    )
    driver_hold_kernel: bool = Field(
        default=True,
        description="Ubuntu prebuilt modules: hold the kernel flavour metapackages with the "
        "driver, so a new kernel never boots without its nvidia module; kernel updates then "
        "wait for a driver_upgrade run. false: nothing on that route is held and kernel, "
        "modules and driver follow the archive nightly.",
    )

    # --- CUDA toolkit -------------------------------------------------------------------
    cuda_toolkit: str = Field(
        default="auto",
        description="auto: the newest release the driver supports (Table 3); none: no "
        "toolkit; or a pin such as 12.6 or 12.6.2.",
    )

    # --- Ollama -------------------------------------------------------------------------
    ollama_state: Literal["present", "absent"] = Field(
        default="present", description="absent removes Ollama (models kept by default)."
    )
    ollama_version: str = Field(default="0.34.2", description="Pinned Ollama release.")
    ollama_sha256: str | None = Field(
        default=None,
        description="sha256 of the release archive; default: gpulab's table, else the "
        "release's sha256sum.txt from ollama_download_base.",
    )
    ollama_download_base: str = Field(
        default=OLLAMA_DOWNLOAD_BASE,
        description="Where release archives live: <base>/v<version>/ollama-linux-<arch>.tar.zst.",
    )
    ollama_host: str = Field(
        default="127.0.0.1:11434",
        description="OLLAMA_HOST, the listen address. Beyond loopback needs "
        "ollama_allowed_clients.",
    )
    ollama_allowed_clients: list[str] = Field(
        default_factory=list,
        description="CIDRs allowed to reach Ollama when it listens beyond loopback "
        "(enforced by a firewall rule).",
    )
    ollama_models_dir: str = Field(
        default="/usr/share/ollama/.ollama/models", description="OLLAMA_MODELS."
    )
    ollama_keep_alive: str = Field(default="5m", description="OLLAMA_KEEP_ALIVE.")
    ollama_num_parallel: int | None = Field(
        default=None, ge=1, description="OLLAMA_NUM_PARALLEL (unset: Ollama's default, 1)."
    )
    ollama_max_loaded_models: int | None = Field(
        default=None, ge=0, description="OLLAMA_MAX_LOADED_MODELS (unset: 3 per GPU)."
    )
    ollama_flash_attention: bool | None = Field(
        default=None, description="OLLAMA_FLASH_ATTENTION (unset: auto where the GPU can)."
    )
    ollama_kv_cache_type: Literal["f16", "q8_0", "q4_0"] | None = Field(
        default=None, description="OLLAMA_KV_CACHE_TYPE (takes effect with flash attention)."
    )
    ollama_remove_models: bool = Field(
        default=False, description="With ollama_state: absent, also delete the models."
    )

    # --- course models ----------------------------------------------------------------
    models: list[str] = Field(
        default_factory=lambda: list(COURSE_MODELS),
        description="Ollama model names every host gets (checked as Ollama reads them: "
        "`gpulab models resolve NAME`).",
    )
    models_distribution: Literal["direct", "seeded", "swarm"] = Field(
        default="direct",
        description="direct: each host pulls; seeded: fetched once for the room, then copied; "
                    "swarm: fetched once, then spread by BitTorrent among the hosts (aria2), "
                    "the room cache seeding it (needs room_cache).",
    )
    models_registry: str = Field(
        default=OLLAMA_REGISTRY,
        description="Ollama model registry, or a mirror serving the same names "
                    "(http://10.0.0.5:9200); hosts still list the canonical names.",
    )
    models_store: str | None = Field(
        default=None,
        description="seeded, swarm: the instructor's store that hosts are copied from "
                    "(filled by `gpulab models fetch --store DIR`).",
    )
    swarm_fallback_seconds: int = Field(
        default=60, ge=4,
        description="swarm: a host whose download has not grown for this long takes the rest "
                    "from the room cache's nginx as well (a web seed), its pieces kept.",
    )
    models_remove_unlisted: bool = Field(
        default=False,
        description="Delete models a host holds that `models` no longer lists (default: keep).",
    )

    # --- vLLM (optional) ----------------------------------------------------------------
    vllm_enabled: bool = Field(
        default=False,
        description="Install vLLM as a service too; false after true stops and disables it.",
    )
    vllm_version: str | None = Field(
        default=None, description="Pinned vLLM release (default: gpulab's table, 0.26.0)."
    )
    vllm_venv: str = Field(default="/opt/vllm", description="vLLM's own virtualenv.")
    vllm_model: str | None = Field(default=None, description="The model vLLM serves.")
    vllm_host: str = Field(
        default="127.0.0.1", description="Listen address; beyond loopback needs vllm_api_key."
    )
    vllm_port: int = Field(default=8000, gt=0, lt=65536, description="Listen port.")
    vllm_api_key: SecretStr | None = Field(
        default=None, description="Required when vllm_host is beyond loopback."
    )
    vllm_api_key_env: str | None = Field(
        default=None,
        description="Instead of vllm_api_key: the environment variable on the machine running "
        "gpulab that holds the key.",
    )
    vllm_pip_index_url: str | None = Field(
        default=None, description="A PyPI mirror for vLLM's virtualenv."
    )
    vllm_wheel_index_base: str = Field(
        default=VLLM_WHEEL_INDEX_BASE,
        description="vLLM's per-CUDA wheel indexes: <base>/<version>/<cuDDD>, used when the "
        "driver needs a build other than the default wheel.",
    )
    vllm_torch_index_base: str = Field(
        default=TORCH_INDEX_BASE,
        description="PyTorch's per-CUDA indexes, <base>/<cuDDD>, for a variant build.",
    )
    vllm_hf_endpoint: str | None = Field(
        default=None, description="HF_ENDPOINT: a Hugging Face mirror for vLLM's model."
    )
    vllm_hub: Literal["huggingface", "modelscope"] = Field(
        default="huggingface",
        description="Where the model comes from; modelscope sets VLLM_USE_MODELSCOPE (rooms "
        "in China).",
    )
    vllm_model_download: bool = Field(
        default=True,
        description="Download the model during the deploy; false leaves it to vLLM's first "
        "start (gpulab's guest tests, which serve no model).",
    )
    vllm_hf_home: str = Field(
        default="/var/lib/vllm/huggingface", description="HF_HOME: the shared model cache."
    )
    vllm_max_model_len: int = Field(
        default=8192, ge=256, description="--max-model-len: the context the KV cache holds."
    )
    vllm_gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1,
        description="--gpu-memory-utilization (default: 0.9, or what Ollama leaves on a "
        "shared GPU).",
    )
    vllm_remove: bool = Field(
        default=False,
        description="With vllm_enabled false, also delete the virtualenv and the model cache.",
    )

    # --- reboots ------------------------------------------------------------------------
    reboot_allowed: bool = Field(
        default=False,
        description="Reboot a host when its driver changed or it says a reboot is required.",
    )
    reboot_batch: int = Field(default=5, ge=1, description="Hosts rebooted at a time.")

    # --- room cache: one machine of the room takes every byte from the internet once ------
    room_cache: str | None = Field(
        default=None,
        description="HOST[:PORT] of the room cache (deploy/room_cache.py; PORT: its nginx, "
        "default 80). Hosts then derive apt_proxy (apt-cacher-ng on HOST:3142, NVIDIA's HTTPS "
        "repository included), ollama_download_base, cuda-keyring and, with seeded models, "
        "the models from it, unless those keys are set. HOST must be an address in "
        "room_cidrs.",
    )
    room_cidrs: list[str] = Field(
        default_factory=list,
        description="The room's networks (CIDRs): the only clients the room cache serves.",
    )
    room_cache_machines: list[Machine] = Field(
        default_factory=lambda: list(ROOM_CACHE_MACHINES),
        description="On the room cache: the machines (uname -m) whose Ollama release it "
        "keeps.",
    )
    room_cache_nvidia_distros: list[RepoDistro] = Field(
        default_factory=lambda: list(ROOM_CACHE_DISTROS),
        description="On the room cache: NVIDIA repository distros whose cuda-keyring it "
        "keeps.",
    )
    room_cache_dir: str = Field(
        default="/srv/gpulab-cache",
        description="On the room cache: the read-only directory nginx serves (Ollama "
        "releases, cuda-keyring, the model store).",
    )

    # --- dry run --------------------------------------------------------------------------
    gpulab_recorded_facts: str | None = Field(
        default=None,
        description="`@fake` hosts only: absolute path of a `gpulab facts` file that replaces "
        "the host's live facts, in the deploy and in `gpulab plan` (a dry run). Refused on any "
        "other host.",
    )
    gpulab_stand_in_facts: str | None = Field(
        default=None,
        description="Rehearsal guests only: an absolute path to a `gpulab facts` file; the host "
        "is deployed for real but planned as that machine (a VM standing in for a GPU PC). "
        "Never on a room's PCs.",
    )

    @field_validator(
        "apt_proxy", "https_proxy", "nvidia_repo_base", "ollama_download_base",
        "models_registry", "vllm_pip_index_url", "vllm_hf_endpoint", "vllm_wheel_index_base",
        "vllm_torch_index_base",
    )
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @field_validator("driver_branch")
    @classmethod
    def _branch(cls, value: int | None) -> int | None:
        if value is not None:
            try:
                branch(value)
            except GpuRuleError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("cuda_toolkit")
    @classmethod
    def _toolkit(cls, value: str) -> str:
        if value not in ("auto", "none"):
            if not re.fullmatch(r"\d+\.\d+(\.\d+)?", value):
                raise ValueError(f"{value!r}: use auto, none, X.Y or X.Y.Z (e.g. 12.6.2)")
            try:
                find_release(value)
            except CompatError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("ollama_version", "vllm_version")
    @classmethod
    def _release(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+\.\d+\.\d+(-rc\d+)?", value):
            raise ValueError(f"{value!r} is not a release number like 0.34.2")
        return value

    @field_validator("ollama_sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("must be 64 lower-case hex digits")
        return value

    @field_validator("ollama_allowed_clients", "room_cidrs")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not a CIDR such as 10.0.0.0/24") from None
        return values

    @field_validator("ollama_host")
    @classmethod
    def _listen(cls, value: str) -> str:
        ollama_listen_address(value)
        return value

    @field_validator("gpulab_recorded_facts", "gpulab_stand_in_facts")
    @classmethod
    def _facts_file(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must be an absolute path; in a Python inventory write "
                             "str(Path(__file__).resolve().parent / 'pc-101.json')")
        try:
            FactsFile.model_validate_json(Path(value).read_text())
        except OSError as error:
            raise ValueError(f"cannot read {value}: {error.strerror}") from None
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{value} is no `gpulab facts` file ({where}: {first['msg']}); "
                             "record one with `gpulab facts INVENTORY --out DIR`") from None
        return value

    @field_validator("vllm_api_key_env")
    @classmethod
    def _variable(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @field_validator("room_cache")
    @classmethod
    def _cache_address(cls, value: str | None) -> str | None:
        if value is not None:
            room_cache_address(value)
        return value

    @field_validator("ollama_models_dir", "vllm_venv", "vllm_hf_home", "room_cache_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must be an absolute path")
        return value.rstrip("/") or "/"

    @field_validator("ollama_keep_alive")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not _DURATION.match(value):
            raise ValueError(f"{value!r} is not a duration such as 5m, 1h30m, 300 or -1")
        return value

    @field_validator("models")
    @classmethod
    def _models(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                parse_model_name(value)
            except ModelNameError as error:
                raise ValueError(str(error)) from None
        return values

    @property
    def room_cache_url(self) -> str | None:
        """``http://HOST[:PORT]``: the room cache's nginx, when there is one."""
        if self.room_cache is None:
            return None
        host, port = room_cache_address(self.room_cache)
        return f"http://{host}" + (f":{port}" if port != 80 else "")

    @property
    def from_store(self) -> bool:
        """Whether the models come from the instructor's store (seeded or swarm), not pulls."""
        return self.models_distribution in ("seeded", "swarm")

    @property
    def ollama_exposed(self) -> bool:
        """Whether Ollama listens beyond loopback."""
        return not _is_loopback(ollama_listen_address(self.ollama_host)[0])

    @property
    def vllm_exposed(self) -> bool:
        """Whether vLLM listens beyond loopback."""
        return not _is_loopback(self.vllm_host)


KNOWN_KEYS = frozenset(Settings.model_fields)


@dataclass(frozen=True)
class SettingsProblem:
    """One thing wrong in one host's data, said as ``host: field: message``."""

    host: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.host}: {self.field}: {self.message}"


class SettingsError(ValueError):
    """Problems in the inventory's data; nothing has been changed on any host."""

    def __init__(self, problems: list[SettingsProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


def gpulab_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a host's data that gpulab owns."""
    return {
        key: value
        for key, value in data.items()
        if key.startswith(GPULAB_PREFIXES)
    }


def _message(error: Mapping[str, Any]) -> str:
    text = str(error["msg"])
    return text.removeprefix("Value error, ")


def parse_settings(host: str, data: Mapping[str, Any]) -> Settings:
    """A host's ``Settings``, or a ``SettingsError`` naming every problem."""
    ours = gpulab_keys(data)
    problems = [
        SettingsProblem(host, key, _unknown_key_message(key))
        for key in ours
        if key not in KNOWN_KEYS
    ]
    known = {key: value for key, value in ours.items() if key in KNOWN_KEYS}
    try:
        settings = Settings.model_validate(known)
    except ValidationError as error:
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"]) or "data"
            problems.append(SettingsProblem(host, field, _message(item)))
        raise SettingsError(problems) from None
    problems.extend(
        SettingsProblem(host, field, message) for field, message in _cross_field_problems(settings)
    )
    if settings.gpulab_recorded_facts and not host.startswith("@fake"):
        # A leftover of a dry run on a real room must not plan a real PC from a file.
        problems.append(SettingsProblem(
            host, "gpulab_recorded_facts", "only for pyinfra's @fake connector (a dry run, "
            "e.g. host @fake/pc-101); remove it from this real host, or use "
            "gpulab_stand_in_facts on a rehearsal guest"))
    if problems:
        raise SettingsError(problems)
    return through_room_cache(settings)


def _cross_field_problems(settings: Settings) -> list[tuple[str, str]]:
    """Rules that tie keys together, each named by the key the user should change."""
    problems = []
    if "-rc" in settings.ollama_version and not (
        settings.ollama_sha256 and settings.ollama_download_base != OLLAMA_DOWNLOAD_BASE
    ):
        # Ollama drops a release candidate's assets once the release is final (a maintainer
        # in ollama/ollama#7507): a room pinned to one would stop installing without notice.
        problems.append((
            "ollama_version",
            f"{settings.ollama_version} is a release candidate, whose download disappears "
            "when it is superseded: pin a final release, or copy the archive to your own "
            "mirror and set ollama_download_base to it and ollama_sha256 to its sha256",
        ))
    if settings.driver_branch is not None and settings.cuda_toolkit not in ("auto", "none"):
        # The branch's first release is what plan checks the pin against (no facts needed).
        first = branch(settings.driver_branch).first_release
        try:
            check_pinned_toolkit(settings.cuda_toolkit, first, "linux")
        except CompatError as error:
            problems.append(("cuda_toolkit", f"driver_branch {settings.driver_branch}: {error}"))
    if settings.room_cache is not None:
        address = ipaddress.ip_address(room_cache_address(settings.room_cache)[0])
        if not settings.room_cidrs:
            problems.append(("room_cidrs", "room_cache needs the room's networks, the only "
                             "clients the cache serves (e.g. ['10.0.0.0/24'])"))
        elif not any(address in ipaddress.ip_network(cidr, strict=False)
                     for cidr in settings.room_cidrs):
            problems.append(("room_cache", f"{address} is in none of room_cidrs "
                             f"({', '.join(settings.room_cidrs)}): the cache must be on the "
                             "room's network, where the hosts reach it"))
    if settings.room_cache is not None and "apt_proxy" not in settings.model_fields_set:
        repo = urllib.parse.urlsplit(settings.nvidia_repo_base)
        if repo.scheme == "https" and repo.port not in (None, 443):
            problems.append(("nvidia_repo_base", f"port {repo.port}: through the room cache, "
                             "apt-cacher-ng's HTTPS route reaches port 443 only; serve the "
                             "mirror on 443 or over http, or set apt_proxy"))
    if settings.models_distribution == "swarm" and settings.room_cache is None:
        problems.append(("room_cache", "models_distribution: swarm needs the room cache, its "
                         "first seed and HTTP fallback (the instructor's machine can be it: @local "
                         "in the group room_cache); or use seeded"))
    if settings.ollama_exposed and not settings.ollama_allowed_clients:
        problems.append((
            "ollama_allowed_clients",
            f"ollama_host {settings.ollama_host} listens beyond loopback: list the CIDRs "
            "that may reach it (e.g. ['10.0.0.0/24'])",
        ))
    if settings.vllm_enabled:
        has_key = settings.vllm_api_key is not None or settings.vllm_api_key_env is not None
        if settings.vllm_exposed and not has_key:
            problems.append((
                "vllm_api_key",
                f"vllm_host {settings.vllm_host} listens beyond loopback: set an API key "
                "(vllm_api_key, or vllm_api_key_env naming a variable on this machine)",
            ))
        if settings.vllm_api_key is not None and settings.vllm_api_key_env is not None:
            problems.append(("vllm_api_key_env", "set vllm_api_key or vllm_api_key_env, not both"))
        if not settings.vllm_model:
            problems.append(("vllm_model", "vllm_enabled needs the model vLLM serves"))
    return problems


def _unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown gpulab key{hint}"


def parse_inventory_settings(hosts: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Settings]:
    """Every host's settings, or one ``SettingsError`` listing the problems of all hosts."""
    settings: dict[str, Settings] = {}
    problems: list[SettingsProblem] = []
    for host, data in hosts:
        try:
            settings[host] = parse_settings(host, data)
        except SettingsError as error:
            problems.extend(error.problems)
    if problems:
        raise SettingsError(problems)
    return settings
