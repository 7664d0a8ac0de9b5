"""Ubuntu's prebuilt NVIDIA modules and a kernel update, on a real guest with real apt and
Debian's real ``unattended-upgrade`` (issue 10, item 1).

The guest (lab-02, the suite's scratch guest) is Debian 12, planned as an Ubuntu 24.04 host
with an RTX 3070 on branch 580 (``tests/plan/facts/ubuntu2404-rtx3070-580.json`` through
``gpulab_stand_in_facts``; its kernel is ABI A's name, ``6.8.0-90-generic``). The Ubuntu
route's packages come from the TEST FIXTURE ``tests/fixtures/ubuntu_archive.py``: the real
names and dependency shape of the kernel flavour metas and Canonical's module packages, as tiny
packages. Test setup, not the product, adds that archive to the guest's apt sources (signed by
the run's test key), installs ``linux-generic`` at ABI A as an Ubuntu host has it, installs
Debian's ``unattended-upgrades`` and lets it take the stand-in's origin (only that origin, so
the run is about these packages alone).

What this proves, in order, on one guest:
1. default policy (``driver_hold_kernel: true``): the deploy holds the driver, the modules meta
   and the kernel flavour metas and blacklists them for unattended-upgrades; with ABI B
   published, ``unattended-upgrade`` installs no ABI-B image or module package and moves no
   meta; the plan says the kernel is held and what that costs;
2. ``driver_upgrade: true``: kernel metas, ABI-B image, ABI-B module package and the driver
   release its modules were built against arrive together, and are held again;
3. ``driver_hold_kernel: false``: the holds are released and the blacklist removed; with ABI C
   published, ``unattended-upgrade`` brings its image and its module package together.
Every deploy is run twice; the second changes nothing.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.http_server import StaticServer
from tests.fixtures.ubuntu_archive import (
    ABI_A,
    ABI_B,
    ABI_C,
    KERNEL_METAS,
    KEYRING_PATH,
    MODULES_META,
    KernelRelease,
    UbuntuArchive,
)
from tests.fleet import FleetUnderTest, inventory_with
from tests.integration.outcomes import assert_unchanged
from tests.phases import record_phase, timed
from tests.pyinfra_run import PyinfraResult, run_pyinfra

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "nvidia.py"
STANDIN_FACTS = REPO / "tests" / "plan" / "facts" / "ubuntu2404-rtx3070-580.json"
GUEST = "lab-02"
DRIVER = "nvidia-driver-580-open"
BLACKLIST = "/etc/apt/apt.conf.d/51gpulab-nvidia-blacklist"
SOURCE_LIST = "/etc/apt/sources.list.d/gpulab-test-ubuntu.list"
# unattended-upgrades takes the stand-in's origin and nothing else (#clear drops Debian's).
ORIGINS_CONF = """\
#clear Unattended-Upgrade::Origins-Pattern;
Unattended-Upgrade::Origins-Pattern { "o=Ubuntu,a=noble-updates"; };
"""
HELD_BY_DEFAULT = sorted([MODULES_META, DRIVER, *KERNEL_METAS])
# unattended-upgrade walks every package apt knows in Python: over Debian's ~60k under TCG that
# took over 4 minutes a run. It sees only the stand-in's index (read first through
# APT_CONFIG; the installed packages still come from dpkg), and no cache file is written,
# so the guest's own apt cache stays as the deploy left it.
UU_APT_CONFIG = "/etc/gpulab-test-unattended-apt.conf"
UU_APT_CONF = f"""\
Dir::Etc::SourceList "{SOURCE_LIST}";
Dir::Etc::SourceParts "/nonexistent";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""


@dataclass
class KernelLab:
    """lab-02, the stand-in archive it reaches, and the deploy run with the test's data."""

    fleet: FleetUnderTest
    archive: UbuntuArchive
    tmp: Path

    def sh(self, command: str, timeout: float = 300) -> str:
        rc, output = self.fleet.ssh(GUEST, command, timeout=timeout)
        assert rc == 0, f"{command!r}: exit {rc}\n{output}"
        return output

    def inventory(self, label: str, data: dict[str, Any]) -> Path:
        settings = {"gpulab_stand_in_facts": str(STANDIN_FACTS), **data}
        return inventory_with(self.fleet, settings, self.tmp / f"inventory-{label}.py")

    def deploy(self, label: str, **data: Any) -> PyinfraResult:
        result = run_pyinfra(self.inventory(label, data), DEPLOY, limit=GUEST, cwd=REPO,
                             timeout=900)
        record_phase(f"kernel hold: {label} (rc {result.rc})", result.seconds)
        assert result.rc == 0, result.describe()
        return result

    def twice(self, label: str, **data: Any) -> PyinfraResult:
        """Deploy, then deploy again with the same data: the second run changes nothing."""
        first = self.deploy(label, **data)
        assert_unchanged(self.deploy(f"{label}, rerun", **data), [GUEST])
        return first

    def plan(self, label: str, **data: Any) -> dict[str, Any]:
        """``gpulab plan --json`` for the guest, as a user runs it (from the stand-in facts)."""
        done = subprocess.run([sys.executable, "-m", "gpulab.cli", "plan",
                               str(self.inventory(f"plan-{label}", data)), "--limit", GUEST,
                               "--json"], capture_output=True, text=True, timeout=120,
                              check=False, cwd=REPO)
        assert done.returncode == 0, done.stdout + done.stderr
        plans: list[dict[str, Any]] = json.loads(done.stdout)["plans"]
        driver: dict[str, Any] = plans[0]["driver"]
        return driver

    def publish(self, release: KernelRelease) -> None:
        self.archive.publish(release)
        self.sh("apt-get update -q")

    def unattended_upgrade(self, label: str) -> str:
        with timed(f"kernel hold: unattended-upgrade, {label}"):
            return self.sh(f"APT_CONFIG={UU_APT_CONFIG} unattended-upgrade -v 2>&1",
                           timeout=600)

    def versions(self, *names: str) -> dict[str, str]:
        """Installed version of each package; "" when it is not installed."""
        out = self.sh("dpkg-query -W -f='${Package} ${db:Status-Abbrev} ${Version}\\n' "
                      + " ".join(names) + " 2>/dev/null || true")
        # Status-Abbrev: wanted ("i" install, "h" hold) then state ("i" installed).
        found = {line.split()[0]: line.split()[-1] for line in out.splitlines()
                 if line.split()[1][1:2] == "i"}
        return {name: found.get(name, "") for name in names}

    def held(self) -> list[str]:
        return sorted(self.sh("apt-mark showhold").split())


@pytest.fixture(scope="module")
def lab(fleet: FleetUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelLab]:
    tmp = tmp_path_factory.mktemp("kernel-hold")
    with StaticServer(tmp / "www") as server:
        archive = UbuntuArchive(server.root / "ubuntu")
        archive.publish(ABI_A)
        lab = KernelLab(fleet, archive, tmp)
        keyring = base64.b64encode(archive.keyring).decode()
        try:
            with timed("kernel hold: guest setup (stand-in archive, unattended-upgrades)"):
                # No timer may start its own unattended run while the test drives one.
                lab.sh("systemctl disable --now apt-daily.timer apt-daily-upgrade.timer "
                       ">/dev/null 2>&1 || true")
                lab.sh(f"echo {keyring} | base64 -d > {KEYRING_PATH} && "
                       f"echo '{archive.source_line(server.guest_url + '/ubuntu')}' "
                       f"> {SOURCE_LIST} && "
                       f"printf '%s' '{ORIGINS_CONF}' > /etc/apt/apt.conf.d/99gpulab-test-origins"
                       f" && printf '%s' '{UU_APT_CONF}' > {UU_APT_CONFIG}")
                # The host runs ABI A's kernel, installed through the flavour meta as on Ubuntu.
                lab.sh("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y "
                       "-q --no-install-recommends unattended-upgrades linux-generic", timeout=900)
            yield lab
        finally:
            fleet.hand_back_clean(GUEST, "kernel hold")


def test_default_holds_the_kernel_and_unattended_upgrade_moves_nothing(lab: KernelLab) -> None:
    first = lab.twice("default policy")
    assert any(MODULES_META in op for op in first.hosts[GUEST].changed), first.describe()
    assert lab.versions(ABI_A.image, ABI_A.modules, DRIVER) == {
        ABI_A.image: ABI_A.version, ABI_A.modules: ABI_A.version, DRIVER: ABI_A.driver_version}
    assert lab.held() == HELD_BY_DEFAULT
    blacklist = lab.sh(f"cat {BLACKLIST}")
    for name in HELD_BY_DEFAULT:
        assert f'"^{name}$";' in blacklist, blacklist

    lab.publish(ABI_B)
    assert "linux-generic/" in lab.sh("apt list --upgradable 2>/dev/null")
    output = lab.unattended_upgrade("ABI B published, default policy")
    # It did look at the stand-in's origin, with gpulab's blacklist in force.
    assert "o=Ubuntu,a=noble-updates" in output, output
    assert "^linux-generic$" in output, output
    assert lab.versions(ABI_B.image, ABI_B.modules) == {ABI_B.image: "", ABI_B.modules: ""}
    assert lab.versions(*KERNEL_METAS, MODULES_META) == dict.fromkeys(
        [*KERNEL_METAS, MODULES_META], ABI_A.version)
    assert lab.versions(DRIVER)[DRIVER] == ABI_A.driver_version
    driver = lab.plan("default")
    assert sorted(driver["held"]) == HELD_BY_DEFAULT
    assert "kernel held with it (linux-generic)" in driver["reason"], driver
    assert "kernel security updates wait for it" in driver["reason"], driver


def test_driver_upgrade_moves_kernel_modules_and_driver_together(lab: KernelLab) -> None:
    first = lab.twice("driver_upgrade", driver_upgrade=True)
    assert any("driver_upgrade" in op for op in first.hosts[GUEST].changed), first.describe()
    assert lab.versions(ABI_B.image, ABI_B.modules, *KERNEL_METAS, MODULES_META) == dict.fromkeys(
        [ABI_B.image, ABI_B.modules, *KERNEL_METAS, MODULES_META], ABI_B.version)
    # The driver release ABI B's modules were built against came with them.
    assert lab.versions(DRIVER)[DRIVER] == ABI_B.driver_version
    assert lab.held() == HELD_BY_DEFAULT


def test_opt_out_holds_nothing_and_the_modules_follow_the_kernel(lab: KernelLab) -> None:
    lab.twice("driver_hold_kernel false", driver_hold_kernel=False)
    assert lab.held() == []
    assert lab.sh(f"test -e {BLACKLIST} && echo present || echo absent").strip() == "absent"
    driver = lab.plan("opt-out", driver_hold_kernel=False)
    assert driver["held"] == []
    assert "nothing held (driver_hold_kernel: false)" in driver["reason"], driver

    lab.publish(ABI_C)
    lab.unattended_upgrade("ABI C published, opt-out")
    assert lab.versions(ABI_C.image, ABI_C.modules, *KERNEL_METAS, MODULES_META) == dict.fromkeys(
        [ABI_C.image, ABI_C.modules, *KERNEL_METAS, MODULES_META], ABI_C.version)
