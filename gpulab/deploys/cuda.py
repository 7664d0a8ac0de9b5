"""The CUDA toolkit the plan chose, from NVIDIA's CUDA apt repository.

The repository (``gpulab.deploys.nvidia_repo``) is shared with the driver deploy
(``driver_source: cuda-repo``); the toolkit is ``cuda-toolkit-X-Y`` held at the plan's exact
update by an apt preferences pin, never ``cuda``, ``cuda-X-Y`` or ``cuda-drivers`` (those pull
a driver; on WSL2 apt is told to refuse them). Several toolkits may coexist; the plan's is
made the ``/usr/local/cuda`` alternative.

    pyinfra inventories/lab.py deploy/cuda.py
"""

from __future__ import annotations

from collections.abc import Generator

from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.facts.apt import noninteractive_apt
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import files

from gpulab.deploys.common import gpulab_deploy, say, template
from gpulab.deploys.context import host_plan
from gpulab.deploys.nvidia_repo import nvidia_repo
from gpulab.facts.files import LinkTarget
from gpulab.plan.driver import WSL_FORBIDDEN_REGEX, version_matches

PROFILE_SCRIPT = "/etc/profile.d/gpulab-cuda.sh"
WSL_PIN = "/etc/apt/preferences.d/gpulab-wsl-no-linux-driver"
PREFERENCES_DIR = "/etc/apt/preferences.d"
CUDA_ALTERNATIVE = "/etc/alternatives/cuda"  # what /usr/local/cuda resolves through


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


def _toolkit_pin_path(package: str) -> str:
    return f"{PREFERENCES_DIR}/gpulab-{package}"


@gpulab_deploy("CUDA toolkit")
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
