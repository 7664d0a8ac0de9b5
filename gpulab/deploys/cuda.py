"""NVIDIA's CUDA apt repository and the CUDA toolkit the plan chose.

The repository step is shared with the driver deploy (``driver_source: cuda-repo``); the
toolkit is ``cuda-toolkit-X-Y`` held at the plan's exact update by an apt preferences pin,
never ``cuda``, ``cuda-X-Y`` or ``cuda-drivers`` (those pull a driver; on WSL2 apt is told to
refuse them). Several toolkits may coexist; the plan's is made the ``/usr/local/cuda``
alternative.

    pyinfra inventories/lab.py deploy/cuda.py
"""

from __future__ import annotations

from collections.abc import Generator
from io import StringIO

from pyinfra.api.deploy import deploy
from pyinfra.api.operation import OperationMeta, operation
from pyinfra.context import host
from pyinfra.facts.apt import noninteractive_apt
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files

from gpulab.deploys.apt import debian_components
from gpulab.deploys.context import host_plan, host_settings, template
from gpulab.facts import LinkTarget
from gpulab.nvidia import WSL_FORBIDDEN_REGEX, version_matches
from gpulab.plan import CUDA_KEYRING, HostPlan

KEYRING_GPG = "/usr/share/keyrings/cuda-archive-keyring.gpg"
# A stable place for the downloaded keyring package: pyinfra's temp name would be fetched
# again whenever /tmp is cleaned, turning a second run into a "change".
KEYRING_DEB = f"/var/cache/gpulab/{CUDA_KEYRING}"
PROFILE_SCRIPT = "/etc/profile.d/gpulab-cuda.sh"
WSL_PIN = "/etc/apt/preferences.d/gpulab-wsl-no-linux-driver"
PREFERENCES_DIR = "/etc/apt/preferences.d"
# Where nvidia_repo() keeps this run's repository operations, so a second caller reuses them.
REPO_OPS_ATTR = "_gpulab_nvidia_repo_ops"
CUDA_ALTERNATIVE = "/etc/alternatives/cuda"  # what /usr/local/cuda resolves through


def source_path(plan: HostPlan) -> str:
    """The sources file cuda-keyring installs, e.g. ``sources.list.d/cuda-debian12-x86_64.list``."""
    assert plan.repo is not None
    return f"/etc/apt/sources.list.d/cuda-{plan.repo.distro}-{plan.repo.arch}.list"


def source_line(plan: HostPlan) -> str:
    """The repository as apt reads it, from ``nvidia_repo_base`` (a mirror works the same).

    >>> # deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] <base>/debian12/x86_64/ /
    """
    assert plan.repo is not None
    return f"deb [signed-by={KEYRING_GPG}] {plan.repo.url} /\n"


def missing_packages(packages: tuple[str, ...] | list[str]) -> list[str]:
    """Which of ``packages`` dpkg does not have installed right now."""
    installed: dict[str, list[str]] = host.get_fact(DebPackages)
    return [name for name in packages if name not in installed]


def debian_sources() -> OperationMeta | None:
    """Add the plan's components (``contrib``, ``non-free``...) to the host's Debian sources."""
    plan = host_plan(host)
    if not plan.debian_components:
        return None
    return debian_components(
        name=f"Debian sources: {' '.join(plan.debian_components)}",
        codename=plan.debian_codename, components=plan.debian_components,
    )


def nvidia_repo(wanted: tuple[str, ...] | list[str]) -> list[OperationMeta]:
    """Install ``cuda-keyring`` from ``plan.repo.keyring_url`` and point apt at ``plan.repo.url``.

    ``wanted`` are the packages the caller installs from it next: when any is missing, the
    lists are refreshed even if nothing here changed (an earlier run may have stopped between
    adding the source and ``apt-get update``). Returns the operations that change sources.

    .. code:: python

        changed = nvidia_repo(["cuda-toolkit-12-6"])
    """
    missing = missing_packages(wanted)
    ops: list[OperationMeta] | None = getattr(host, REPO_OPS_ATTR, None)
    if ops is not None:
        # The driver deploy set the repository up earlier in this run: refresh the lists
        # only for packages still missing (its own update covered a changed source).
        apt.update(name="apt lists for NVIDIA's repository", _if=lambda: bool(missing))
        return ops
    plan = host_plan(host)
    settings = host_settings(host)
    assert plan.repo is not None, "the plan has no NVIDIA repository for this host"
    ops = []
    setattr(host, REPO_OPS_ATTR, ops)
    sources = debian_sources()
    if sources is not None:
        ops.append(sources)
    files.directory(name="gpulab download cache", path="/var/cache/gpulab", mode="755")
    files.download(
        name=f"cuda-keyring from {plan.repo.keyring_url}",
        src=plan.repo.keyring_url, dest=KEYRING_DEB, mode="644",
        proxy=settings.https_proxy,
    )
    ops.append(apt.deb(name="cuda-keyring (NVIDIA's signing key)", src=KEYRING_DEB))
    # cuda-keyring's own sources file names NVIDIA's host; ours names the configured base,
    # so a classroom mirror in nvidia_repo_base is what apt really uses.
    ops.append(files.put(
        name=f"NVIDIA CUDA repository {plan.repo.url}", src=StringIO(source_line(plan)),
        dest=source_path(plan), mode="644",
    ))
    apt.update(
        name="apt lists for NVIDIA's repository",
        _if=lambda: bool(missing) or any(op.did_change() for op in ops),
    )
    return ops


@operation()
def cuda_alternative(prefix: str) -> Generator[str]:
    """Make ``prefix`` the ``/usr/local/cuda`` alternative, only when it is not already.

    .. code:: python

        cuda_alternative(name="CUDA 12.6 is /usr/local/cuda", prefix="/usr/local/cuda-12.6")
    """
    current = host.get_fact(LinkTarget, path=CUDA_ALTERNATIVE)
    if current == prefix:
        host.noop(f"/usr/local/cuda is already {prefix}")
        return
    yield f"update-alternatives --set cuda {prefix}"


@operation()
def pinned_package(package: str, apt_version: str) -> Generator[str]:
    """Install ``package`` at the version its apt pin selects, unless that version is there.

    pyinfra's ``apt.packages`` sees any installed version as done; a toolkit pinned to 12.6.2
    with 12.6.3 installed is not done, so this compares the version with the pin's glob.

    .. code:: python

        pinned_package(package="cuda-toolkit-12-6", apt_version="12.6.2-*")
    """
    installed: dict[str, list[str]] = host.get_fact(DebPackages)
    if version_matches(installed.get(package, []), apt_version):
        host.noop(f"{package} {apt_version} is installed")
        return
    # --allow-downgrades: the 1001 pin may select an older update than the one installed.
    yield f"{noninteractive_apt('install --allow-downgrades')} {package}"


@operation()
def say(message: str) -> Generator[str]:
    """Do nothing on the host; tell the user why (``host.noop``).

    .. code:: python

        say(name="CUDA toolkit: none", message="cuda_toolkit is none")
    """
    host.noop(message)
    yield from ()


def _toolkit_pin_path(package: str) -> str:
    return f"{PREFERENCES_DIR}/gpulab-{package}"


@deploy("CUDA toolkit")
def cuda_toolkit() -> None:
    """Install the toolkit the plan chose, pinned, on PATH, and the active ``/usr/local/cuda``.

    Example: on Ubuntu 24.04 with branch 580 the plan says CUDA 13.0.0, so this writes
    ``/etc/apt/preferences.d/gpulab-cuda-toolkit-13-0`` (``Pin: version 13.0.0-*``,
    ``Pin-Priority: 1001``) and installs ``cuda-toolkit-13-0`` from ``ubuntu2404/x86_64``.
    """
    plan = host_plan(host)
    toolkit = plan.toolkit
    if toolkit.version is None or plan.repo is None:
        say(name=f"CUDA toolkit: none ({toolkit.reason})", message=toolkit.reason)
        return
    assert toolkit.package and toolkit.apt_version and toolkit.prefix
    # Never a package that carries a driver (cuda, cuda-X-Y, cuda-drivers): the plan only
    # names cuda-toolkit-X-Y, and this keeps it that way whatever the plan grows into.
    if not toolkit.package.startswith("cuda-toolkit-"):
        raise ValueError(f"{plan.host}: refusing CUDA package {toolkit.package}: not a toolkit")
    if plan.platform.startswith("wsl2-"):
        files.template(
            name="WSL2: apt refuses Linux driver packages",
            src=template("cuda/wsl-no-linux-driver.pref.j2"), dest=WSL_PIN, mode="644",
            regex=WSL_FORBIDDEN_REGEX,
        )
    files.template(
        name=f"apt pin: {toolkit.package} {toolkit.apt_version}",
        src=template("cuda/toolkit-pin.pref.j2"), dest=_toolkit_pin_path(toolkit.package),
        mode="644", package=toolkit.package, apt_version=toolkit.apt_version,
        version=toolkit.version,
    )
    nvidia_repo([toolkit.package])
    pinned_package(
        name=f"CUDA {toolkit.version}: {toolkit.package} ({toolkit.reason})",
        package=toolkit.package, apt_version=toolkit.apt_version,
    )
    files.template(
        name=f"PATH: /usr/local/cuda/bin ({PROFILE_SCRIPT})",
        src=template("cuda/gpulab-cuda.sh.j2"), dest=PROFILE_SCRIPT, mode="644",
    )
    cuda_alternative(name=f"/usr/local/cuda is CUDA {toolkit.version}", prefix=toolkit.prefix)


__all__ = [
    "cuda_alternative",
    "cuda_toolkit",
    "nvidia_repo",
    "pinned_package",
    "say",
]
