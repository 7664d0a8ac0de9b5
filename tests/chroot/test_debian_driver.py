"""The real Debian 12 driver, installed by the real deploy through pyinfra's ``@chroot``.

What this proves: on Debian 12 the plan's distro route works end to end with real packages:
the host's own sources gain ``contrib non-free non-free-firmware``, ``linux-headers-amd64``
comes first, Debian's non-free ``nvidia-driver`` installs and DKMS builds
``nvidia-current.ko`` for the root filesystem's kernel (the packaged version), the driver is
held and blacklisted for unattended-upgrades, the reboot policy refuses a chroot, and a second
run changes nothing. The chroot has no GPU, so its facts are a recorded Debian 12 host with a
GTX 1650 whose kernel is the tree's installed kernel (``gpulab_stand_in_facts``).

Needs root and the Debian mirror this machine uses. Measured here (2 CPUs): first run 598 s
(headers, nvidia-driver 535.309.01 and its DKMS build), second run 1 s, whole test 615 s;
the tree grows to ~2.7 GB. pyinfra's ``@chroot`` connector runs each command as
``chroot <dir> sh -c <command>`` and uploads by ``cp`` into the tree, so it needs root.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gpulab.verify.checks import parse_kernel_modules
from gpulab.verify.probes import KERNEL_MODULES_SCRIPT
from tests.chroot.conftest import Rootfs
from tests.phases import record_phase
from tests.pyinfra_run import run_pyinfra

pytestmark = pytest.mark.chroot

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "tests/plan/facts/debian12-gtx1650.json"


def _inventory(tmp: Path, rootfs: Rootfs) -> tuple[Path, str]:
    facts = json.loads(RECORDED.read_text())
    facts["facts"]["kernel"] = rootfs.kernel
    facts_file = tmp / "facts-chroot-gtx1650.json"
    facts_file.write_text(json.dumps(facts, indent=2))
    name = f"@chroot{rootfs.path}"
    # Debian's own route is asked for: the default on Debian 12 is NVIDIA's repository.
    data = {"gpulab_stand_in_facts": str(facts_file), "driver_source": "debian"}
    inventory = tmp / "inventory_chroot.py"
    inventory.write_text(f"chroot = [({name!r}, {data!r})]\n")
    return inventory, name


def test_debian_nvidia_driver_builds_with_dkms_and_is_held(
    debian_rootfs: Rootfs, tmp_path: Path
) -> None:
    inventory, name = _inventory(tmp_path, debian_rootfs)
    kver = debian_rootfs.kernel

    first = run_pyinfra(inventory, REPO / "deploy/nvidia.py", cwd=REPO, timeout=1800)
    assert first.rc == 0, first.describe()
    changed = first.hosts[name].changed
    assert any("nvidia-driver" in op for op in changed), first.describe()

    # Sources: the image's own entries, components added (no new mirror anywhere).
    sources = debian_rootfs.run("cat /etc/apt/sources.list")
    for line in sources.splitlines():
        if line.startswith("deb ") and " bookworm" in line:
            assert line.split()[3:] == ["main", "contrib", "non-free", "non-free-firmware"], line

    # DKMS built the module for the tree's kernel, at the packaged version.
    status = debian_rootfs.run("dkms status")
    assert re.search(rf"nvidia-current/[\d.]+, {re.escape(kver)}, x86_64: installed", status), \
        status
    packaged = debian_rootfs.run("dpkg-query -W -f='${Version}' nvidia-driver").strip()
    module = f"/lib/modules/{kver}/updates/dkms/nvidia-current.ko"
    built = debian_rootfs.run(f"modinfo -k {kver} -F version {module}").strip()
    assert packaged.startswith(built + "-"), (packaged, built)

    # gpulab verify's kernel check, run on the same tree, finds the module for its kernel.
    kernels = parse_kernel_modules(debian_rootfs.run(KERNEL_MODULES_SCRIPT))
    assert kernels.get(kver) is True, kernels

    # Held, and blacklisted for unattended-upgrades.
    holds = debian_rootfs.run("apt-mark showhold").split()
    assert {"nvidia-driver", "nvidia-kernel-dkms"} <= set(holds), holds
    blacklist = (debian_rootfs.path / "etc/apt/apt.conf.d/51gpulab-nvidia-blacklist").read_text()
    assert '"^nvidia-driver$";' in blacklist and '"^nvidia-kernel-dkms$";' in blacklist

    # The reboot policy never reboots a chroot, and says so.
    assert "@chroot is a directory, not a machine" in first.output

    second = run_pyinfra(inventory, REPO / "deploy/nvidia.py", cwd=REPO, timeout=900)
    assert second.rc == 0, second.describe()
    assert second.hosts[name].changed == [], second.describe()
    record_phase(f"chroot: nvidia-driver {packaged} + DKMS build for {kver}", first.seconds)
    record_phase("chroot: second run (no-op)", second.seconds)
