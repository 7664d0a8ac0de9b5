"""HostPlan: what one host gets and why, decided once from its facts and its settings.

Pure: no I/O, no pyinfra. Every deploy reads the plan; none re-derives a version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from gpulab.compat.cuda import (
    CompatError,
    Platform,
    Toolkit,
    check_pinned_toolkit,
    choose_toolkit,
    find_release,
)
from gpulab.compat.gpus import (
    Flavour,
    GpuRuleError,
    branch,
    check_branch,
    check_flavour,
    choose_flavour,
    family_of_name,
    family_of_pci,
    newest_branch_for,
)
from gpulab.compat.tables import (
    CUDA_REPO_FIRST_OPEN_BRANCH,
    CUDA_REPO_LAST_SUFFIXED_BRANCH,
    DEBIAN_DISTRO_BRANCH,
    DEFAULT_BRANCH,
    Family,
)
from gpulab.compat.versions import branch_of
from gpulab.facts.model import HostFacts, parse_wsl_version
from gpulab.models.names import ModelName
from gpulab.models.store import StoredModel
from gpulab.plan.models import ModelFit, plan_models
from gpulab.plan.vllm import VllmPlan, VllmRefused, plan_vllm
from gpulab.settings import Settings, ollama_listen_address

DriverSource = Literal["ubuntu", "cuda-repo", "debian"]
CUDA_KEYRING = "cuda-keyring_1.1-1_all.deb"
DEBIAN_COMPONENTS = ("main", "contrib", "non-free", "non-free-firmware")
SUPPORTED_PLATFORMS = ("ubuntu-22.04", "ubuntu-24.04", "debian-12")
# The kernel each Ubuntu LTS shipped with; any other kernel there is the HWE one.
UBUNTU_GA_KERNELS = {"22.04": "5.15", "24.04": "6.8"}


class PlanError(ValueError):
    """The data asks for something this host cannot have; nothing has been changed."""

    def __init__(self, host: str, field: str, message: str) -> None:
        self.host, self.field, self.message = host, field, message
        super().__init__(f"{host}: {field}: {message}")


class _Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DriverPlan(_Plan):
    """The driver: ``source`` None means none is installed, ``reason`` says why."""

    source: DriverSource | None
    branch: int | None = None
    flavour: Flavour | None = None
    dkms: bool = False
    pre_packages: tuple[str, ...] = ()  # installed before the driver (pins, headers)
    packages: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    changes: bool = False  # the loaded driver is not (yet) this branch
    reason: str


class ToolkitPlan(_Plan):
    """The CUDA toolkit: ``version`` None means none, ``reason`` says why."""

    version: str | None = None
    package: str | None = None
    apt_version: str | None = None
    prefix: str | None = None
    min_driver: str | None = None
    reason: str


class RepoPlan(_Plan):
    """NVIDIA's CUDA apt repository for this host, when anything comes from it."""

    distro: str
    arch: str
    base_url: str

    @property
    def url(self) -> str:
        """The repository directory: ``<base>/<distro>/<arch>/``."""
        return f"{self.base_url}/{self.distro}/{self.arch}/"

    @property
    def keyring_url(self) -> str:
        """The ``cuda-keyring`` package that installs the key and the source."""
        return self.url + CUDA_KEYRING


class OllamaPlan(_Plan):
    """Ollama's service: where it listens and whether it can run yet."""

    state: Literal["present", "absent"]
    version: str
    listen_host: str
    listen_port: int
    exposed: bool
    allowed_clients: tuple[str, ...] = ()
    after_nvidia: bool
    service_can_run: bool
    reason: str


class RebootPlan(_Plan):
    """Whether the host may need a reboot, and whether gpulab may do it."""

    may_be_needed: bool
    allowed: bool
    reason: str


class HostPlan(_Plan):
    """Everything one host gets, each decision with a one-line reason."""

    host: str
    platform: str
    gpus: tuple[str, ...]
    driver: DriverPlan
    repo: RepoPlan | None
    debian_components: tuple[str, ...] = ()
    debian_codename: str = ""  # the suite whose components are edited (bookworm)
    toolkit: ToolkitPlan
    ollama: OllamaPlan
    models: tuple[ModelFit, ...]
    reboot: RebootPlan
    vllm: VllmPlan


def platform_of(facts: HostFacts) -> str:
    """``ubuntu-24.04``, ``debian-12``, ``wsl2-ubuntu-22.04``."""
    name = f"{facts.os.id}-{facts.os.version_id}"
    return f"wsl2-{name}" if facts.wsl else name


def _families(facts: HostFacts) -> list[Family]:
    found: list[Family] = []
    for gpu in facts.pci_gpus:
        family = family_of_pci(gpu.device_id, gpu.name)
        if family is not None:
            found.append(family)
    if not found:
        for smi_gpu in facts.smi.gpus:
            family = family_of_name(smi_gpu.name)
            if family is not None:
                found.append(family)
    return found


def _gpu_labels(facts: HostFacts) -> tuple[str, ...]:
    if facts.pci_gpus:
        return tuple(gpu.name for gpu in facts.pci_gpus)
    return tuple(gpu.name for gpu in facts.smi.gpus)


def _repo_distro(facts: HostFacts) -> str | None:
    if facts.wsl and facts.os.id == "ubuntu":
        return "wsl-ubuntu"
    if facts.os.id == "ubuntu" and facts.os.version_id in UBUNTU_GA_KERNELS:
        return "ubuntu" + facts.os.version_id.replace(".", "")
    if facts.os.id == "debian" and facts.os.version_id == "12":
        return "debian12"
    return None


def ubuntu_kernel_flavour(facts: HostFacts) -> str:
    """The flavour in Canonical's prebuilt module packages: ``generic``, ``generic-hwe-22.04``."""
    release = facts.kernel
    flavour = release.rsplit("-", 1)[-1] if "-" in release else "generic"
    ga_kernel = UBUNTU_GA_KERNELS.get(facts.os.version_id)
    if ga_kernel and not release.startswith(ga_kernel + "."):
        return f"{flavour}-hwe-{facts.os.version_id}"
    return flavour


def _running_driver(facts: HostFacts) -> str | None:
    """The driver version the host runs: the loaded module's, else nvidia-smi's."""
    return facts.loaded_driver_version or next(
        (gpu.driver_version for gpu in facts.smi.gpus), None
    )


def _ubuntu_headers(facts: HostFacts) -> tuple[str, ...]:
    """Headers for the running kernel, and the meta package that brings them for the next
    kernel too: DKMS cannot rebuild the driver for a kernel whose headers are missing."""
    return (f"linux-headers-{facts.kernel}", f"linux-headers-{ubuntu_kernel_flavour(facts)}")


def _installed_branch(facts: HostFacts) -> int | None:
    if facts.wsl:
        return None
    version = _running_driver(facts)
    return branch_of(version) if version else None


def plan_driver(host: str, facts: HostFacts, settings: Settings) -> DriverPlan:
    """Which driver, from where, as which packages, or why none."""
    families = _families(facts)
    if facts.wsl:
        if settings.driver_source not in ("auto", "none"):
            raise PlanError(
                host, "driver_source",
                "WSL2 uses the Windows driver; a Linux driver must never be installed inside "
                "WSL2: remove driver_source (or set it to none)",
            )
        return DriverPlan(source=None, reason="WSL2: the Windows driver provides the GPU")
    if settings.driver_source == "none":
        return DriverPlan(source=None, reason="driver_source is none")
    if not facts.pci_gpus:
        return DriverPlan(source=None, reason="no NVIDIA GPU found (lspci)")
    if not families:
        names = ", ".join(gpu.name for gpu in facts.pci_gpus)
        raise PlanError(host, "driver_branch", f"cannot tell the architecture of {names}")
    kepler = [f.name for f in families if f.last_branch is not None and f.last_branch < 535]
    if kepler:
        raise PlanError(
            host, "driver_source",
            f"{kepler[0]} GPUs end at branch 470 and CUDA 11; gpulab does not install those",
        )
    source = _driver_source(host, facts, settings, families)
    number = _driver_branch(host, settings, families, source)
    flavour = _driver_flavour(host, settings, families, number)
    try:
        check_branch(number, families)
    except GpuRuleError as error:
        raise PlanError(host, "driver_branch", str(error)) from None
    installed = _installed_branch(facts)
    changes = installed != number
    gpu_text = "/".join(sorted({f.name for f in families}))
    why = f"{gpu_text} GPU: branch {number} {flavour} from {source}"
    if installed is not None and changes:
        why += f" (replaces branch {installed})"
    dkms = source != "ubuntu" or settings.driver_dkms
    if dkms and facts.secure_boot == "enabled" and not settings.driver_secure_boot_proceed:
        raise PlanError(
            host, "driver_secure_boot_proceed",
            "Secure Boot is on and these kernel modules are built by DKMS, signed by a key the "
            "firmware does not trust yet. Set driver_secure_boot_proceed: true and run again; "
            "DKMS then creates its signing key on the first build ("
            + ("/var/lib/shim-signed/mok/MOK.der" if facts.os.id == "ubuntu"
               else "/var/lib/dkms/mok.pub")
            + "): enroll it with `mokutil --import <key>`, reboot and choose Enroll MOK"
            + ("; or use Ubuntu's prebuilt signed modules (driver_dkms: false)"
               if source == "ubuntu" else ""),
        )
    pre, packages, held = _driver_packages(host, facts, settings, source, number, flavour)
    return DriverPlan(
        source=source, branch=number, flavour=flavour, dkms=dkms, pre_packages=pre,
        packages=packages, held=held, changes=changes, reason=why,
    )


def _driver_source(
    host: str, facts: HostFacts, settings: Settings, families: list[Family]
) -> DriverSource:
    requested = settings.driver_source
    if requested == "auto":
        if facts.os.id == "ubuntu":
            return "ubuntu"
        if facts.os.id == "debian":
            fits_debian = all(f.min_branch <= DEBIAN_DISTRO_BRANCH for f in families)
            wanted = settings.driver_branch in (None, DEBIAN_DISTRO_BRANCH)
            return "debian" if fits_debian and wanted else "cuda-repo"
        raise PlanError(host, "driver_source", f"no driver source known for {facts.os.id}")
    if requested == "ubuntu" and facts.os.id != "ubuntu":
        raise PlanError(host, "driver_source", f"ubuntu is not available on {facts.os.id}")
    if requested == "debian" and facts.os.id != "debian":
        raise PlanError(host, "driver_source", f"debian is not available on {facts.os.id}")
    assert requested != "none"
    return requested


def _driver_branch(
    host: str, settings: Settings, families: list[Family], source: DriverSource
) -> int:
    if source == "debian":
        if settings.driver_branch not in (None, DEBIAN_DISTRO_BRANCH):
            raise PlanError(
                host, "driver_branch",
                f"Debian 12 packages branch {DEBIAN_DISTRO_BRANCH} only; for "
                f"{settings.driver_branch} set driver_source: cuda-repo",
            )
        return DEBIAN_DISTRO_BRANCH
    if settings.driver_branch is not None:
        return settings.driver_branch
    return newest_branch_for(families, DEFAULT_BRANCH)


def _driver_flavour(
    host: str, settings: Settings, families: list[Family], number: int
) -> Flavour:
    try:
        if settings.driver_flavour == "auto":
            return choose_flavour(families, number)
        return check_flavour(settings.driver_flavour, families)
    except GpuRuleError as error:
        raise PlanError(host, "driver_flavour", str(error)) from None


def _driver_packages(
    host: str,
    facts: HostFacts,
    settings: Settings,
    source: DriverSource,
    number: int,
    flavour: Flavour,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(installed first, the driver, the packages held)."""
    open_suffix = "-open" if flavour == "open" else ""
    if source == "ubuntu":
        name = f"{number}{'-server' if settings.driver_server else ''}{open_suffix}"
        if settings.driver_dkms:
            modules = f"nvidia-dkms-{name}"
            pre: tuple[str, ...] = _ubuntu_headers(facts)
        else:
            modules = f"linux-modules-nvidia-{name}-{ubuntu_kernel_flavour(facts)}"
            pre = ()
        driver = f"nvidia-driver-{name}"
        return pre, (modules, driver), (modules, driver)
    headers = ("linux-headers-amd64",) if facts.os.id == "debian" else _ubuntu_headers(facts)
    if source == "debian":
        if flavour == "open":
            raise PlanError(
                host, "driver_flavour",
                "Debian 12's own packages give the proprietary modules; for open modules set "
                "driver_source: cuda-repo",
            )
        return headers, ("nvidia-driver",), ("nvidia-driver", "nvidia-kernel-dkms")
    meta = "nvidia-open" if flavour == "open" else "cuda-drivers"
    if flavour == "open" and number < CUDA_REPO_FIRST_OPEN_BRANCH:
        raise PlanError(
            host, "driver_flavour",
            f"NVIDIA's repository has no nvidia-open-{number}; open modules there start at "
            f"branch {CUDA_REPO_FIRST_OPEN_BRANCH}: choose a newer driver_branch, or "
            "driver_flavour: proprietary",
        )
    if number <= CUDA_REPO_LAST_SUFFIXED_BRANCH:
        package = f"{meta}-{number}"
        return headers, (package,), (package,)
    pinning = f"nvidia-driver-pinning-{number}"
    return (*headers, pinning), (meta,), (pinning, meta)


def _toolkit_driver(
    facts: HostFacts, driver: DriverPlan
) -> tuple[str | None, Platform, str]:
    """The driver version the toolkit must run on, its numbering, and where it came from."""
    if facts.wsl:
        version = next((gpu.driver_version for gpu in facts.smi.gpus), None)
        return version, "windows", f"Windows driver {version}"
    if driver.branch is not None:
        first = branch(driver.branch).first_release
        return first, "linux", f"branch {driver.branch} (from {first})"
    version = _running_driver(facts)
    return version, "linux", f"driver {version}"


def plan_toolkit(
    host: str, facts: HostFacts, settings: Settings, driver: DriverPlan
) -> ToolkitPlan:
    """The CUDA toolkit release the driver runs, pinned to the exact update."""
    if settings.cuda_toolkit == "none":
        return ToolkitPlan(reason="cuda_toolkit is none")
    if _repo_distro(facts) is None:
        return ToolkitPlan(reason=f"NVIDIA has no CUDA repository for {platform_of(facts)}")
    version, platform, origin = _toolkit_driver(facts, driver)
    caps = [f.last_cuda_major for f in _families(facts) if f.last_cuda_major is not None]
    max_major = min(caps) if caps else None
    if version is None:
        if settings.cuda_toolkit == "auto":
            return ToolkitPlan(reason="no NVIDIA driver to run a toolkit; pin cuda_toolkit to "
                               "install one anyway")
        row = find_release(settings.cuda_toolkit)
        pinned = Toolkit(row.version, row.linux_min, "linux")
        return _toolkit_plan(pinned, f"pinned {settings.cuda_toolkit}; no driver here to check")
    try:
        if settings.cuda_toolkit == "auto":
            toolkit = choose_toolkit(version, platform, max_major)
            capped = f", CUDA {max_major}.x for these GPUs" if max_major else ""
            return _toolkit_plan(toolkit, f"newest release {origin} runs{capped}")
        toolkit = check_pinned_toolkit(settings.cuda_toolkit, version, platform, max_major)
    except CompatError as error:
        raise PlanError(host, "cuda_toolkit", str(error)) from None
    return _toolkit_plan(toolkit, f"pinned; {origin} meets its minimum {toolkit.min_driver}")


def _toolkit_plan(toolkit: Toolkit, reason: str) -> ToolkitPlan:
    return ToolkitPlan(
        version=toolkit.version, package=toolkit.package, apt_version=toolkit.apt_version,
        prefix=toolkit.prefix, min_driver=toolkit.min_driver, reason=reason,
    )


def plan_ollama(facts: HostFacts, settings: Settings, driver: DriverPlan) -> OllamaPlan:
    """Where Ollama listens and whether its service can run on this host now."""
    host, port = ollama_listen_address(settings.ollama_host)
    can_run = facts.systemd_running and not (facts.wsl and facts.wsl_systemd is False)
    if settings.ollama_state == "absent":
        reason = "ollama_state is absent"
    elif not can_run and facts.wsl:
        reason = ("WSL2 without systemd: gpulab turns it on in /etc/wsl.conf; run "
                  "`wsl --shutdown` in Windows, then run gpulab again")
    elif not can_run:
        reason = "systemd is not running on this host: the service cannot start"
    elif settings.ollama_exposed:
        reason = f"listens on {host}:{port} for {', '.join(settings.ollama_allowed_clients)}"
    else:
        reason = f"listens on {host}:{port} (loopback only)"
    return OllamaPlan(
        state=settings.ollama_state, version=settings.ollama_version, listen_host=host,
        listen_port=port, exposed=settings.ollama_exposed,
        allowed_clients=tuple(settings.ollama_allowed_clients),
        after_nvidia=driver.source is not None, service_can_run=can_run, reason=reason,
    )


def plan_reboot(facts: HostFacts, settings: Settings, driver: DriverPlan) -> RebootPlan:
    """A reboot only when the driver changes or the host asks, and only where allowed."""
    if facts.wsl:
        return RebootPlan(may_be_needed=False, allowed=False,
                          reason="WSL2 is never rebooted by gpulab; use `wsl --shutdown`")
    needed = (driver.source is not None and driver.changes) or facts.reboot_required
    if not needed:
        return RebootPlan(may_be_needed=False, allowed=settings.reboot_allowed,
                          reason="no driver change and no reboot required")
    why = "the driver changes" if driver.changes and driver.source else "the host requires one"
    if settings.reboot_allowed:
        return RebootPlan(may_be_needed=True, allowed=True, reason=f"{why}: rebooted by gpulab")
    return RebootPlan(may_be_needed=True, allowed=False,
                      reason=f"{why}: reboot it yourself (or set reboot_allowed: true)")


def make_plan(host: str, facts: HostFacts, settings: Settings,
              models_source: Mapping[ModelName, StoredModel] | None = None) -> HostPlan:
    """The whole plan for one host; ``PlanError`` when the data cannot be satisfied.

    ``models_source``: the instructor's manifests in seeded mode (``seeded_source``).
    """
    platform = f"{facts.os.id}-{facts.os.version_id}"
    if facts.wsl and parse_wsl_version(facts.kernel) == 1:
        raise PlanError(
            host, "os",
            "WSL1 has no GPU support and no systemd: in Windows run "
            "`wsl --set-version <distro> 2`, then run gpulab again",
        )
    if platform not in SUPPORTED_PLATFORMS or (facts.wsl and facts.os.id != "ubuntu"):
        raise PlanError(
            host, "os",
            f"{facts.os.pretty_name or platform} is not supported; gpulab provisions "
            f"{', '.join(SUPPORTED_PLATFORMS)} (and Ubuntu under WSL2)",
        )
    driver = plan_driver(host, facts, settings)
    toolkit = plan_toolkit(host, facts, settings, driver)
    distro = _repo_distro(facts)
    needs_repo = toolkit.version is not None or driver.source == "cuda-repo"
    repo = None
    if needs_repo and distro is not None:
        arch = "sbsa" if facts.arch == "aarch64" else "x86_64"
        repo = RepoPlan(distro=distro, arch=arch, base_url=settings.nvidia_repo_base)
    cuda_driver, cuda_platform, _ = _toolkit_driver(facts, driver)
    try:
        vllm = plan_vllm(facts, settings, _families(facts), cuda_driver, cuda_platform)
    except VllmRefused as refused:
        raise PlanError(host, refused.field, refused.message) from None
    components: tuple[str, ...] = ()
    if facts.os.id == "debian" and (driver.source == "debian" or repo is not None):
        components = DEBIAN_COMPONENTS if driver.source == "debian" else ("main", "contrib")
    return HostPlan(
        host=host, platform=platform_of(facts), gpus=_gpu_labels(facts), driver=driver,
        repo=repo, debian_components=components,
        debian_codename=facts.os.codename if components else "", toolkit=toolkit,
        ollama=plan_ollama(facts, settings, driver),
        models=plan_models(facts, settings, models_source),
        reboot=plan_reboot(facts, settings, driver), vllm=vllm,
    )
