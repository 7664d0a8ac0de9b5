"""NVIDIA's repository as the driver source, on a real Debian 12 guest, against the stand-in.

What this proves, with real apt/dpkg/update-alternatives on the guest and a real reboot:
- ``cuda-keyring`` is downloaded from ``nvidia_repo_base`` and installed; the source names the
  configured base; the host's own Debian sources gain ``contrib`` (nothing else changes there);
- the branch's meta package (``nvidia-open-580``) installs and is held, and the
  unattended-upgrades blacklist is in place;
- ``cuda-toolkit-13-0`` is held at 13.0.0-1 by the 1001 pin although 13.0.2-1 is newer in the
  repository; ``nvcc`` is on a login shell's PATH through ``/etc/profile.d``;
- the guest is rebooted because the driver changed (``reboot_allowed: true``); it has no NVIDIA
  GPU on its PCI bus, so the post-reboot check says so instead of running nvidia-smi (the
  stand-in carries no kernel module; the failure messages are unit-tested over recorded
  outputs in ``tests/unit/test_driver_check.py``);
- a second run changes nothing and does not reboot;
- pinning ``cuda_toolkit: "12.6"`` adds 12.6.3 next to 13.0 and makes it ``/usr/local/cuda``
  although 13.0 has the higher alternatives priority; no reboot.

The guest has no GPU, so its gpulab facts are a recorded Debian 12 + GTX 1650 host
(``gpulab_stand_in_facts``); everything else is the guest's own state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.http_server import StaticServer
from tests.fixtures.nvidia_repo import build_repo
from tests.fleet import FleetUnderTest, inventory_with
from tests.integration.outcomes import assert_ready, assert_unchanged, verify
from tests.phases import record_phase
from tests.pyinfra_run import PyinfraResult, run_pyinfra

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "tests/plan/facts/debian12-gtx1650.json"
DEPLOYS = (REPO / "deploy/nvidia.py", REPO / "deploy/cuda.py")
GUEST = "lab-02"  # the suite's scratch guest, handed back clean at the end


@dataclass
class Lab:
    """One booted guest, the stand-in repository it reaches, and how to run pyinfra on it."""

    fleet: FleetUnderTest
    server: StaticServer
    tmp: Path
    facts: Path

    def sh(self, command: str, check: bool = True) -> str:
        """A command on the guest as root, through the fleet's SSH client."""
        rc, output = self.fleet.ssh(GUEST, command, timeout=120)
        if check and rc != 0:
            raise AssertionError(f"{command!r}: exit {rc}\n{output}")
        return output

    def deploy(self, **data: object) -> PyinfraResult:
        """Run the driver and CUDA entry points on the guest with ``data`` added to its data."""
        settings = {
            "gpulab_stand_in_facts": str(self.facts),
            "nvidia_repo_base": self.server.guest_url,
            "driver_source": "cuda-repo",
            "reboot_allowed": True,
            # this host gets the driver and toolkit only: verify must not expect Ollama
            "ollama_state": "absent", "models": [],
            **data,
        }
        inventory = inventory_with(self.fleet, settings, self.tmp / "inventory_nvidia.py")
        result = run_pyinfra(inventory, *DEPLOYS, limit=GUEST, cwd=REPO, timeout=1200)
        assert result.rc == 0, result.describe()
        return result

    def boot_id(self) -> str:
        return self.sh("cat /proc/sys/kernel/random/boot_id").strip()


@pytest.fixture(scope="module")
def lab(fleet: FleetUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("nvidia-repo")
    with StaticServer(tmp / "www") as server:
        build_repo(tmp / "www", "debian12", server.guest_url)
        facts = json.loads(RECORDED.read_text())
        facts["facts"]["kernel"] = fleet.image.kernel_version
        facts_file = tmp / f"facts-{GUEST}.json"
        facts_file.write_text(json.dumps(facts, indent=2))
        try:
            yield Lab(fleet, server, tmp, facts_file)
        finally:
            fleet.hand_back_clean(GUEST, "nvidia repo")


def test_driver_and_toolkit_from_nvidia_repo_with_reboot(lab: Lab) -> None:
    before = lab.boot_id()
    first = lab.deploy()
    changed = first.hosts[GUEST].changed
    assert any("nvidia-open-580" in op for op in changed), first.describe()

    # Keyring and source, from the configured base (the stand-in as the guest sees it).
    assert lab.sh("dpkg-query -W -f='${Version}' cuda-keyring") == "1.1-1"
    assert lab.sh("test -s /usr/share/keyrings/cuda-archive-keyring.gpg && echo ok") == "ok\n"
    assert lab.sh("cat /etc/apt/sources.list.d/cuda-debian12-x86_64.list") == (
        "deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] "
        f"{lab.server.guest_url}/debian12/x86_64/ /\n"
    )
    assert lab.server.count("/debian12/x86_64/cuda-keyring_1.1-1_all.deb", "GET") == 1
    for line in lab.sh("cat /etc/apt/sources.list").splitlines():
        if line.startswith("deb ") and " bookworm" in line:
            assert line.split()[3:] == ["main", "contrib"], line

    # Driver: the branch meta package (its unsuffixed nvidia-driver kept at 580 by gpulab's
    # branch pin although the repository's newest is 590), held and blacklisted.
    assert "Pin: version 580.*" in lab.sh("cat /etc/apt/preferences.d/gpulab-nvidia-driver-branch")
    assert lab.sh("cat /usr/lib/nvidia-stub/version") == "580.95.05\n"
    # the meta and every installed package of its branch (the stand-in's nvidia-driver)
    assert lab.sh("apt-mark showhold").split() == ["nvidia-driver", "nvidia-open-580"]
    assert '"^nvidia-open-580$";' in lab.sh("cat /etc/apt/apt.conf.d/51gpulab-nvidia-blacklist")

    # Toolkit 13.0.0 although 13.0.2 is in the repository: the 1001 pin.
    assert lab.sh("dpkg-query -W -f='${Version}' cuda-toolkit-13-0") == "13.0.0-1"
    policy = lab.sh("apt-cache policy cuda-toolkit-13-0")
    assert "Candidate: 13.0.0-1" in policy and "13.0.2-1" in policy, policy
    assert "release 13.0, V13.0.48" in lab.sh("bash -lc 'nvcc --version'")
    assert lab.sh("bash -lc 'command -v nvcc'") == "/usr/local/cuda/bin/nvcc\n"
    assert lab.sh("readlink /etc/alternatives/cuda") == "/usr/local/cuda-13.0\n"

    # Rebooted for the driver; no GPU on this guest's bus, so nvidia-smi was not checked.
    assert lab.boot_id() != before
    assert any("reboot for the driver" in op for op in changed), first.describe()
    assert "no NVIDIA GPU on the PCI bus: nvidia-smi not checked" in first.output

    # Second run: nothing changes, no reboot.
    booted = lab.boot_id()
    second = lab.deploy()
    assert_unchanged(second, [GUEST])
    assert lab.boot_id() == booted

    # Another toolkit next to the first; the plan's becomes /usr/local/cuda.
    third = lab.deploy(cuda_toolkit="12.6")
    assert lab.sh("dpkg-query -W -f='${Version}' cuda-toolkit-12-6") == "12.6.3-1"
    assert lab.sh("dpkg-query -W -f='${Version}' cuda-toolkit-13-0") == "13.0.0-1"
    assert lab.sh("readlink /etc/alternatives/cuda") == "/usr/local/cuda-12.6\n"
    assert "release 12.6, V12.6.85" in lab.sh("bash -lc 'nvcc --version'")
    assert "Value: /usr/local/cuda-12.6" in lab.sh("update-alternatives --query cuda")
    assert not any("reboot" in op for op in third.hosts[GUEST].changed), third.describe()
    assert lab.boot_id() == booted
    # gpulab verify from the same inventory: the driver and toolkit as planned, ready
    verdict = verify(lab.tmp / "inventory_nvidia.py", "--limit", GUEST,
                     label="nvidia repo guest")
    assert_ready(verdict, [GUEST])
    assert verdict.hosts[GUEST]["Does /usr/local/cuda point at it?"][0] == "pass"
    record_phase("nvidia repo: first run, with reboot", first.seconds)
    record_phase("nvidia repo: second run (no-op)", second.seconds)
    record_phase("nvidia repo: toolkit 12.6 beside 13.0", third.seconds)
