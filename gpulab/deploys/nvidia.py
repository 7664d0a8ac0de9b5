"""The NVIDIA driver the plan chose, held against drift.

Sources (``plan.driver.source``): Ubuntu's archive (Canonical's prebuilt signed
``linux-modules-nvidia-*`` unless DKMS is asked for), NVIDIA's CUDA repository (keyring,
``cuda-drivers-NNN``/``nvidia-open-NNN``, or from 590 ``nvidia-driver-pinning-NNN`` first and
then the unsuffixed names), Debian 12 non-free ``nvidia-driver`` (components added to the
host's own sources), or none (WSL2, no GPU, disabled: the run says why).

    pyinfra inventories/lab.py deploy/nvidia.py
"""

from __future__ import annotations

import re
from collections.abc import Generator

from pyinfra.api.operation import OperationMeta, operation
from pyinfra.context import host
from pyinfra.facts.apt import noninteractive_apt
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files

from gpulab.deploys.apt import held
from gpulab.deploys.common import gpulab_deploy, missing_packages, say, template
from gpulab.deploys.context import host_plan, host_run, host_settings
from gpulab.deploys.nvidia_repo import debian_sources, nvidia_repo
from gpulab.facts.apt import HeldPackages, UpgradablePackages
from gpulab.plan.driver import (
    DRIVER_HOLD_NAMES,
    DRIVER_SET_NAMES,
    blacklist_patterns,
    installed_driver_set,
)

BLACKLIST_CONF = "/etc/apt/apt.conf.d/51gpulab-nvidia-blacklist"
BRANCH_PIN = "/etc/apt/preferences.d/gpulab-nvidia-driver-branch"


@operation()
def upgrade_within_branch(
    packages: tuple[str, ...] | list[str], held_now: bool, branch_set: int | None = None
) -> Generator[str]:
    """Upgrade ``packages`` to their newest candidate, lifting and restoring their holds.

    The names are branch names (``nvidia-driver-580-open``, ``cuda-drivers-580``), or 590+
    names kept in the branch by ``nvidia-driver-pinning-NNN``, so "newest" stays in the branch;
    on Ubuntu's prebuilt modules the held kernel metas move with them. ``branch_set``: every
    installed package of that branch is held too (NVIDIA's repository) and moves with them.

    .. code:: python

        upgrade_within_branch(packages=["cuda-drivers-580"], held_now=True, branch_set=580)
    """
    found: list[str] = host.get_fact(UpgradablePackages)
    upgradable = set(found)
    if not upgradable.intersection(packages):
        host.noop(f"{', '.join(packages)}: no newer release in the branch")
        return
    names = " ".join(packages)
    if branch_set is not None:
        names += f" $({installed_driver_set(branch_set)})"
    upgrade = f"{noninteractive_apt('install --only-upgrade')} {names}"
    if not held_now:
        yield upgrade
        return
    # One shell, so the packages are held again even when the upgrade fails.
    yield (f"apt-mark unhold {names} && {{ {upgrade}; status=$?; apt-mark hold {names}; "
           "exit $status; }")


@operation()
def held_branch_set(branch: int, install_pending: bool) -> Generator[str]:
    """Hold every installed package of driver ``branch``, not only the metas gpulab names.

    Decided on the host when it runs: the driver's parts are known once apt installed them.

    .. code:: python

        held_branch_set(branch=580, install_pending=True)
    """
    installed: dict[str, list[str]] = host.get_fact(DebPackages)
    held_now: list[str] = host.get_fact(HeldPackages)
    on_hold = set(held_now)
    unheld = [
        name for name, versions in installed.items()
        if re.search(DRIVER_SET_NAMES, name) and name not in on_hold
        and any(version.startswith(f"{branch}.") for version in versions)
    ]
    if not install_pending and not unheld:
        host.noop(f"every installed package of branch {branch} is held")
        return
    yield f'names=$({installed_driver_set(branch)}); [ -z "$names" ] || apt-mark hold $names'


@operation()
def release_other_holds(
    keep: tuple[str, ...] | list[str], branch_set: int | None = None
) -> Generator[str]:
    """Unhold NVIDIA driver packages held for another branch, so apt may replace them.

    A host moving from branch 535 to 580 still has the 535 names on hold; apt refuses to
    remove held packages, so the new branch could not install. With ``branch_set``, every
    installed package of that branch is this branch's too (NVIDIA's repository, where
    gpulab holds the whole installed set under unsuffixed names such as ``nvidia-driver``).

    .. code:: python

        release_other_holds(keep=["nvidia-driver-580-open"])
    """
    installed: dict[str, list[str]] = host.get_fact(DebPackages) if branch_set else {}

    def in_branch_set(name: str) -> bool:
        return any(version.startswith(f"{branch_set}.") for version in installed.get(name, []))

    stale = [
        name for name in host.get_fact(HeldPackages)
        if DRIVER_HOLD_NAMES.match(name) and name not in keep and not in_branch_set(name)
    ]
    if not stale:
        host.noop("no other NVIDIA packages on hold")
        return
    yield f"apt-mark unhold {' '.join(stale)}"


@gpulab_deploy("NVIDIA driver")
def nvidia_driver() -> None:
    """Install and hold the driver ``plan.driver`` names, or say why there is none.

    Example: Ubuntu 22.04 with an RTX 3070 installs ``linux-modules-nvidia-580-open-generic``
    and ``nvidia-driver-580-open``, holds both and writes the unattended-upgrades blacklist.
    """
    plan = host_plan(host)
    settings = host_settings(host)
    driver = plan.driver
    run = host_run(host)
    run.driver_ops = []
    if driver.source is None:
        say(name=f"NVIDIA driver: none ({driver.reason})", message=driver.reason)
        return
    wanted = [*driver.pre_packages, *driver.packages]
    missing = missing_packages(wanted)
    sources: list[OperationMeta] = []
    if driver.source == "cuda-repo":
        sources = nvidia_repo(wanted)
    else:
        components = debian_sources()
        if components is not None:
            sources.append(components)
            apt.update(
                name="apt lists for the added components",
                _if=lambda: bool(missing) or any(op.did_change() for op in sources),
            )
    release_other_holds(name="release holds of other driver branches", keep=driver.held,
                        branch_set=driver.branch if driver.hold_installed_set else None)
    if not any(name.startswith("nvidia-driver-pinning-") for name in driver.pre_packages):
        # NVIDIA's repo carries several branches under the same names: cuda-drivers-580
        # depends on nvidia-driver (= 580.x) while the newest nvidia-driver is another
        # branch and apt does not backtrack (seen on the fleet against the stand-in). On
        # Debian the same repo, added for the toolkit, would otherwise outrank Debian's 535.
        files.template(
            name=f"apt pin: NVIDIA driver packages stay in branch {driver.branch}",
            src=template("nvidia/driver-branch.pref.j2"), dest=BRANCH_PIN, mode="644",
            branch=driver.branch,
        )
    else:
        files.file(name="no gpulab driver branch pin (nvidia-driver-pinning does it)",
                   path=BRANCH_PIN, present=False)
    if driver.pre_packages:
        # Headers before the driver (its DKMS build needs them), the 590+ pinning package
        # before the unsuffixed names (so apt resolves them inside the branch).
        apt.packages(
            name=f"before the driver: {' '.join(driver.pre_packages)}",
            packages=list(driver.pre_packages),
        )
    installed = apt.packages(
        name=f"NVIDIA driver: {' '.join(driver.packages)} ({driver.reason})",
        packages=list(driver.packages),
    )
    ops = [installed]
    if settings.driver_upgrade:
        ops.append(upgrade_within_branch(
            name=f"driver_upgrade: newest {driver.branch} release",
            packages=driver.held or driver.packages, held_now=bool(driver.held),
            branch_set=driver.branch if driver.hold_installed_set else None,
        ))
    run.driver_ops = ops
    if not driver.held:
        files.file(name=f"nothing held: no unattended-upgrades blacklist ({driver.reason})",
                   path=BLACKLIST_CONF, present=False)
        return
    held(name=f"hold {' '.join(driver.held)}", packages=list(driver.held))
    if driver.hold_installed_set:
        assert driver.branch is not None
        held_branch_set(name=f"hold every installed package of branch {driver.branch}",
                        branch=driver.branch, install_pending=bool(missing))
    files.template(
        name=f"unattended-upgrades leaves the driver alone ({BLACKLIST_CONF})",
        src=template("nvidia/51gpulab-nvidia-blacklist.j2"), dest=BLACKLIST_CONF, mode="644",
        patterns=blacklist_patterns(driver.held), branch=driver.branch, source=driver.source,
    )
