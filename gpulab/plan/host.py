"""HostPlan: what one host gets and why, decided once from its facts and its settings.

Pure: no I/O, no pyinfra. Every deploy reads the plan; none re-derives a version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from gpulab.compat.cuda import (
    CompatError,
    NotInRepository,
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
    REPO_FIRST_TOOLKIT,
    UBUNTU_ARCHIVE_BRANCHES,
    Family,
)
from gpulab.compat.versions import branch_of
from gpulab.facts.model import HostFacts, parse_wsl_version
from gpulab.models.names import ModelName
from gpulab.models.store import StoredModel
from gpulab.plan.driver import DKMS_DEFAULT_KEY, UBUNTU_DKMS_KEY
from gpulab.plan.models import ModelFit, plan_models
from gpulab.plan.vllm import VllmPlan, VllmRefused, plan_vllm
from gpulab.settings import (
    ROOM_CACHE_PATHS,
    Settings,
    from_room_cache,
    ollama_listen_address,
    room_cache_address,
)

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
    mok_key: str | None = None  # DKMS's signing certificate, to enroll under Secure Boot
    pre_packages: tuple[str, ...] = ()  # installed before the driver (pins, headers)
    packages: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    # NVIDIA's repository: its metas depend with ">=" on the driver's parts, so every
    # installed package of the branch is held, not just the metas in ``held``.
    hold_installed_set: bool = False
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
    keyring_base: str = ""  # where cuda-keyring comes from when not base_url (the room cache)

    @property
    def url(self) -> str:
        """The repository directory: ``<base>/<distro>/<arch>/``."""
        return f"{self.base_url}/{self.distro}/{self.arch}/"

    @property
    def keyring_url(self) -> str:
        """The ``cuda-keyring`` package that installs the key and the source."""
        base = self.keyring_base or self.base_url
        return f"{base}/{self.distro}/{self.arch}/{CUDA_KEYRING}"


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
    # The running module is not the installed driver (NVML mismatch, or not loaded at all):
    # a reboot is needed whatever this run changes.
    driver_stale: bool = False
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
    room_cache: str | None = None  # the cache's address, when some of this comes through it
    via_room_cache: tuple[str, ...] = ()  # which of apt, nvidia, ollama, models


def room_cache_routes(settings: Settings) -> tuple[str, ...]:
    """What reaches this host through the room cache: ``apt`` (the archives, through
    apt-cacher-ng), ``nvidia`` (NVIDIA's repository and cuda-keyring), ``ollama`` (the
    release archive), ``models`` (seeded models, over HTTP)."""
    if settings.room_cache is None:
        return ()
    routes = []
    if from_room_cache(settings, "apt_proxy"):
        routes.append("apt")
    if from_room_cache(settings, "nvidia_repo_base"):
        routes.append("nvidia")
    if from_room_cache(settings, "ollama_download_base"):
        routes.append("ollama")
    if settings.from_store:
        routes.append("models")
    return tuple(routes)


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


def dkms_mok_key(facts: HostFacts) -> str:
    """The certificate DKMS signs modules with, which Secure Boot needs enrolled: Ubuntu's
    shim-signed key, else DKMS's own default (``mok_certificate`` in dkms's framework.conf)."""
    return UBUNTU_DKMS_KEY if facts.os.id == "ubuntu" else DKMS_DEFAULT_KEY


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
    if source == "ubuntu":
        _check_ubuntu_archive(host, facts, number)
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
            f"DKMS then creates its signing key on the first build ({dkms_mok_key(facts)}"
            + "): enroll it with `mokutil --import <key>`, reboot and choose Enroll MOK"
            + ("; or use Ubuntu's prebuilt signed modules (driver_dkms: false)"
               if source == "ubuntu" else ""),
        )
    pre, packages, held = _driver_packages(host, facts, settings, source, number, flavour)
    if source == "ubuntu" and not dkms:
        why += "; " + _kernel_hold_policy(facts, settings)
    return DriverPlan(
        source=source, branch=number, flavour=flavour, dkms=dkms,
        mok_key=dkms_mok_key(facts) if dkms else None, pre_packages=pre, packages=packages,
        held=held, hold_installed_set=source == "cuda-repo", changes=changes, reason=why,
    )


def _check_ubuntu_archive(host: str, facts: HostFacts, number: int) -> None:
    """Refuse a branch Canonical's archive has no packages of its own for."""
    carried = UBUNTU_ARCHIVE_BRANCHES.get(facts.os.version_id, {}).get(number, number)
    if carried == number:
        return
    release = f"Ubuntu {facts.os.version_id}"
    if carried is None:
        message = f"{release}'s archive has no driver branch {number}"
    else:
        # Holding the dummy names would report branch N while the host runs another.
        message = (f"{release}'s archive carries branch {number} only as a transitional "
                   f"package that installs {carried}: set driver_branch: {carried}")
    raise PlanError(host, "driver_branch",
                    message + f", or driver_source: cuda-repo for NVIDIA's own {number}")


def ubuntu_kernel_metas(facts: HostFacts) -> tuple[str, ...]:
    """The kernel flavour metapackages that move a host to a new kernel ABI.

    >>> from gpulab.facts.model import OsInfo
    >>> ubuntu_kernel_metas(HostFacts(hostname="h", os=OsInfo(id="ubuntu", version_id="24.04"),
    ...                               kernel="6.8.0-90-generic"))
    ('linux-generic', 'linux-image-generic', 'linux-headers-generic')
    """
    flavour = ubuntu_kernel_flavour(facts)
    return (f"linux-{flavour}", f"linux-image-{flavour}", f"linux-headers-{flavour}")


def _kernel_hold_policy(facts: HostFacts, settings: Settings) -> str:
    """What holding (or not) the kernel with Canonical's prebuilt modules means here."""
    if settings.driver_hold_kernel:
        return (f"kernel held with it ({ubuntu_kernel_metas(facts)[0]}): each new kernel's "
                "modules are built for the branch's newest release, so kernel, modules and "
                "driver move together in a driver_upgrade run, and kernel security updates "
                "wait for it")
    return ("nothing held (driver_hold_kernel: false): kernel, modules and driver follow "
            "the archive nightly; the driver runs again after the next reboot")


def _driver_source(
    host: str, facts: HostFacts, settings: Settings, families: list[Family]
) -> DriverSource:
    requested = settings.driver_source
    if requested == "auto":
        if facts.os.id == "ubuntu":
            return "ubuntu"
        if facts.os.id == "debian":
            # Debian's own 535 runs CUDA 12.2 at most, and NVIDIA's debian12 repository starts
            # at 12.3: only NVIDIA's driver makes a working driver + toolkit pair there.
            fits_debian = all(f.min_branch <= DEBIAN_DISTRO_BRANCH for f in families)
            wanted = settings.driver_branch == DEBIAN_DISTRO_BRANCH
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
        driver = f"nvidia-driver-{name}"
        if settings.driver_dkms:
            modules = f"nvidia-dkms-{name}"
            return _ubuntu_headers(facts), (modules, driver), (modules, driver)
        # Canonical's prebuilt modules meta depends on the module package of one kernel ABI:
        # held alone, a new kernel would boot without an nvidia module.
        modules = f"linux-modules-nvidia-{name}-{ubuntu_kernel_flavour(facts)}"
        if not settings.driver_hold_kernel:
            return (), (modules, driver), ()
        return (), (modules, driver), (modules, driver, *ubuntu_kernel_metas(facts))
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
    """The CUDA toolkit release the driver runs and NVIDIA's repository carries, pinned."""
    if settings.cuda_toolkit == "none":
        return ToolkitPlan(reason="cuda_toolkit is none")
    repo = _repo_distro(facts)
    if repo is None:
        return ToolkitPlan(reason=f"NVIDIA has no CUDA repository for {platform_of(facts)}")
    version, platform, origin = _toolkit_driver(facts, driver)
    caps = [f.last_cuda_major for f in _families(facts) if f.last_cuda_major is not None]
    max_major = min(caps) if caps else None
    try:
        if version is None:
            if settings.cuda_toolkit == "auto":
                return ToolkitPlan(reason="no NVIDIA driver to run a toolkit; pin cuda_toolkit "
                                   "to install one anyway")
            row = find_release(settings.cuda_toolkit)
            pinned = check_pinned_toolkit(settings.cuda_toolkit, row.linux_min, "linux",
                                          repo=repo)
            return _toolkit_plan(pinned, f"pinned {settings.cuda_toolkit}; no driver here to "
                                 "check")
        if settings.cuda_toolkit == "auto":
            toolkit = choose_toolkit(version, platform, max_major, repo)
            capped = f", CUDA {max_major}.x for these GPUs" if max_major else ""
            return _toolkit_plan(toolkit, f"newest release {origin} runs and {repo} "
                                 f"carries{capped}")
        toolkit = check_pinned_toolkit(settings.cuda_toolkit, version, platform, max_major, repo)
    except NotInRepository as error:
        if settings.cuda_toolkit != "auto":
            raise PlanError(host, "cuda_toolkit", str(error)) from None
        return ToolkitPlan(reason=f"no toolkit: {error}; {_toolkit_ways_out(repo)}")
    except CompatError as error:
        raise PlanError(host, "cuda_toolkit", str(error)) from None
    return _toolkit_plan(toolkit, f"pinned; {origin} meets its minimum {toolkit.min_driver}")


def _toolkit_ways_out(repo: str) -> str:
    """What a host whose driver is older than its repository's toolkits can do instead."""
    debian = ("; or Debian's own nvidia-cuda-toolkit (11.8, non-free), installed by you"
              if repo == "debian12" else "")
    return (f"ways out: a newer driver_branch (CUDA {REPO_FIRST_TOOLKIT[repo]} and newer; "
            f"on Debian with driver_source: cuda-repo){debian}; or cuda_toolkit: none to say "
            "no toolkit is wanted")


def _toolkit_plan(toolkit: Toolkit, reason: str) -> ToolkitPlan:
    # The pin holds cuda-toolkit-X-Y at this update; its parts (cuda-nvcc-X-Y, libcublas-X-Y,
    # ...) carry their own version numbers and are required with ">=", so apt brings the newest
    # X.Y update's. They stay inside X.Y (their names say so), which the driver runs under
    # minor-version compatibility (https://docs.nvidia.com/deploy/cuda-compatibility/).
    scope = (f"pinned to the {toolkit.major_minor} minor release: {toolkit.package} stays at "
             f"{toolkit.version}, its parts follow the newest {toolkit.major_minor} update")
    return ToolkitPlan(
        version=toolkit.version, package=toolkit.package, apt_version=toolkit.apt_version,
        prefix=toolkit.prefix, min_driver=toolkit.min_driver, reason=f"{reason}; {scope}",
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


def stale_driver(facts: HostFacts) -> str | None:
    """Why the running kernel module is not the installed driver, or None when it is.

    nvidia-smi exits 18 ("Driver/library version mismatch") when apt replaced the libraries
    under a loaded older module, and 9 when no module is loaded although the driver's tools
    are installed (a new kernel without its module package, a module never loaded).
    """
    if facts.wsl or not facts.pci_gpus:
        # Without a GPU on the bus no module binds anything: a reboot would change nothing.
        return None
    smi = facts.smi
    loaded = facts.loaded_driver_version
    library = facts.driver_library_version
    if smi.exit_code == 18 or "version mismatch" in smi.message.lower():
        versions = (f" (module {loaded or 'unknown'}, library {library or 'unknown'})"
                    if loaded or library else "")
        return (f"the loaded nvidia module is not the installed driver{versions}: nvidia-smi "
                "fails with Driver/library version mismatch until a reboot loads the new module")
    if smi.exit_code == 9 and loaded is None:
        installed = f" {library}" if library else ""
        return (f"the driver{installed} is installed but no nvidia module is loaded: a reboot "
                "loads it (if it still does not, the post-reboot check says why)")
    return None


def plan_reboot(facts: HostFacts, settings: Settings, driver: DriverPlan) -> RebootPlan:
    """A reboot only when the driver changes, the host asks or the running module is stale,
    and only where allowed."""
    if facts.wsl:
        return RebootPlan(may_be_needed=False, allowed=False,
                          reason="WSL2 is never rebooted by gpulab; use `wsl --shutdown`")
    stale = stale_driver(facts)
    needed = (driver.source is not None and driver.changes) or facts.reboot_required or bool(stale)
    if not needed:
        return RebootPlan(may_be_needed=False, allowed=settings.reboot_allowed,
                          reason="no driver change and no reboot required")
    if stale:
        why = stale
    else:
        why = "the driver changes" if driver.changes and driver.source else "the host requires one"
    if settings.reboot_allowed:
        return RebootPlan(may_be_needed=True, allowed=True, driver_stale=bool(stale),
                          reason=f"{why}: rebooted by gpulab")
    return RebootPlan(may_be_needed=True, allowed=False, driver_stale=bool(stale),
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
        cache = settings.room_cache_url
        keyring_base = (cache + ROOM_CACHE_PATHS["nvidia"]
                        if cache and from_room_cache(settings, "nvidia_repo_base") else "")
        repo = RepoPlan(distro=distro, arch=arch, base_url=settings.nvidia_repo_base,
                        keyring_base=keyring_base)
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
        room_cache=(room_cache_address(settings.room_cache)[0] if settings.room_cache
                    else None),
        via_room_cache=room_cache_routes(settings),
    )
