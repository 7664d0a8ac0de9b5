"""The test fleet itself: real guests, real pyinfra over SSH, real testinfra.

Order matters and is the file order: deploy, idempotent rerun, testinfra, a host failing
mid-run (the guest then resumes its saved boot), and a separate daemonized fleet driven
through the ``gpulab lab`` CLI, saved and resumed running, with a leftovers check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import testinfra

from gpulab.lab.image import ImagePaths
from tests.fleet import FleetUnderTest, inventory_with
from tests.integration.outcomes import assert_ready, assert_unchanged, verify
from tests.pyinfra_run import PyinfraResult

pytestmark = [
    pytest.mark.integration,
    # testinfra's paramiko backend warns about (and accepts) host keys; pyinfra and the fleet
    # itself pin them to the image's keys
    pytest.mark.filterwarnings("ignore:Unknown ssh-ed25519 host key:UserWarning"),
]

REPO = Path(__file__).resolve().parents[2]
FLEET_DEPLOY = Path(__file__).with_name("fleet_deploy.py")
Runner = Callable[..., PyinfraResult]
Timer = Callable[[str], AbstractContextManager[None]]
BASE_DEPLOY = REPO / "deploy" / "base.py"


def deploys() -> list[Path]:
    """The project's real base deploy followed by the fleet's own small one."""
    return [BASE_DEPLOY, FLEET_DEPLOY]


def test_deploy_runs_on_all_guests_in_parallel(
    fleet: FleetUnderTest, pyinfra_runner: Runner
) -> None:
    result = pyinfra_runner(*deploys(), label="first deploy, 2 guests")
    assert result.rc == 0, result.describe()
    assert result.failed_hosts == [], result.describe()
    assert result.changed_hosts == sorted(fleet.guests), result.describe()


def test_second_run_changes_nothing(fleet: FleetUnderTest, pyinfra_runner: Runner) -> None:
    result = pyinfra_runner(*deploys(), label="rerun (must be no-op), 2 guests")
    assert_unchanged(result, fleet.guests)


@pytest.mark.parametrize("name", ["lab-01", "lab-02"])
def test_testinfra_sees_the_deployed_state(fleet: FleetUnderTest, name: str) -> None:
    host = testinfra.get_host(f"paramiko://{name}", ssh_config=str(fleet.ssh_config))
    assert host.check_output("hostname") == name
    assert host.system_info.distribution == "debian"
    assert host.system_info.codename == "bookworm"
    # gpulab's apt base (deploy/base.py)
    lock = host.file("/etc/apt/apt.conf.d/01gpulab-lock")
    assert lock.is_file and 'DPkg::Lock::Timeout "600";' in lock.content_string
    assert not host.file("/etc/apt/apt.conf.d/01gpulab-proxy").exists  # no proxy in the data
    for tool in ("curl", "gnupg", "pciutils", "zstd"):
        assert host.package(tool).is_installed, tool
    # the fleet's own small deploy
    assert host.package("tree").is_installed
    marker = host.file("/etc/gpulab-fleet-marker")
    assert marker.is_file and marker.content_string == "gpulab fleet\n"
    assert marker.mode == 0o644
    svc = host.service("fleet-hello")
    assert svc.is_running and svc.is_enabled
    # clones must differ where it matters
    other = next(n for n in fleet.guests if n != name)
    other_host = testinfra.get_host(f"paramiko://{other}", ssh_config=str(fleet.ssh_config))
    assert host.file("/etc/machine-id").content_string.strip()
    assert (host.file("/etc/machine-id").content_string
            != other_host.file("/etc/machine-id").content_string)
    # and the guest reaches this machine's loopback through 10.0.2.2 (used by fixtures)
    assert host.run("ip -4 route show default").stdout.split()[2] == "10.0.2.2"


def test_gpulab_verify_finds_both_guests_ready(fleet: FleetUnderTest, tmp_path: Path) -> None:
    """The base deploy alone, verified as such: no GPU, no toolkit, no Ollama asked for."""
    only_base = {"ollama_state": "absent", "models": [], "cuda_toolkit": "none"}
    inventory = inventory_with(fleet, only_base, tmp_path / "inventory_base.py")
    verdict = verify(inventory, label="base deploy, 2 guests")
    assert_ready(verdict, fleet.guests)
    for name in fleet.guests:
        assert verdict.hosts[name]["Is the driver held?"] == (
            "n/a", "no driver planned: no NVIDIA GPU found (lspci)")


@pytest.mark.parametrize(("moment", "slow_key", "finished"), [
    ("while facts are gathered", "fleet_slow_facts", "gathered\n"),
    ("while operations run", "fleet_slow", "finished\n"),
])
def test_failed_host_is_named_and_others_finish(
    fleet: FleetUnderTest, pyinfra_runner: Runner, clean_guest: Callable[..., str],
    moment: str, slow_key: str, finished: str,
) -> None:
    victim, survivor = "lab-02", "lab-01"
    for name in (victim, survivor):
        fleet.ssh(name, "rm -f /root/fleet-run-finished /run/gpulab-slow-step")
    holder: dict[str, PyinfraResult] = {}
    run = threading.Thread(
        target=lambda: holder.setdefault(
            "r", pyinfra_runner(FLEET_DEPLOY, data={slow_key: "1"},
                                label=f"run, lab-02 dies {moment}")
        )
    )
    run.start()
    try:
        # the slow step is the run's first: reached once pyinfra has connected and prepared
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # kill it inside the slow step
            rc, _ = fleet.ssh(victim, "test -e /run/gpulab-slow-step", timeout=10)
            if rc == 0:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the slow step ({moment}) never started on the victim")
        fleet.kill(victim)
        run.join(timeout=300)
        assert not run.is_alive(), "pyinfra did not finish after a host died"
        result = holder["r"]
        assert result.rc != 0, result.describe()
        assert result.failed_hosts == [victim], result.describe()
        assert victim in result.output
        assert fleet.ssh(survivor, "cat /root/fleet-run-finished")[1] == finished
    finally:
        run.join(timeout=300)
        # the clean-guest factory: the guest as saved after its first boot; no marker
        clean_guest(victim)
    _, out = fleet.ssh(victim, "test -e /etc/gpulab-fleet-marker; echo $?; hostname")
    assert out.split() == ["1", victim]


def _lab(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpulab.lab.commands", "lab", "--state-dir", str(state), *args],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO,
    )


def test_lab_cli_save_resume_and_nothing_left(
    lab_image: ImagePaths, tmp_path: Path, phase_timer: Timer
) -> None:
    """``lab up`` daemonizes a guest; saved running and resumed, it is back as it was saved;
    ``lab down`` leaves nothing."""
    state = tmp_path / "lab"
    with phase_timer("lab up --hosts 1 (daemonized, boot-to-SSH)"):
        up = _lab(state, "up", "--hosts", "1")
    assert up.returncode == 0, up.stderr
    try:
        status = json.loads(_lab(state, "status", "--json").stdout)
        assert status["guests"][0]["name"] == "lab-01"
        assert status["guests"][0]["state"] == "ready"
        assert status["accel"] in ("tcg", "kvm")
        ssh = subprocess.run(["ssh", "-F", status["ssh_config"], "lab-01", "hostname"],
                             capture_output=True, text=True, timeout=60, check=False)
        assert ssh.stdout.strip() == "lab-01", ssh.stderr

        fleet = FleetUnderTest.load(state, log=lambda _: None)
        ports = {"lab-01": fleet.guests["lab-01"].port}
        with phase_timer("save running + resume (1 guest)"):
            fleet.ssh("lab-01", "touch /root/before-save")
            fleet.save_running("lab-01", "s1")
            fleet.ssh("lab-01", "touch /root/after-save")
            fleet.resume("lab-01", "s1")
        ports["lab-01"] = fleet.guests["lab-01"].port
        # the saved state again, running: what was written after the save is gone, and the
        # clock was set to now (a resumed guest's clock would lag by the time in between)
        rc, out = fleet.ssh("lab-01", "ls /root; date +%s")
        assert rc == 0, out
        *files, clock = out.split()
        assert files == ["before-save"]
        assert abs(int(clock) - time.time()) < 30
        status = json.loads(_lab(state, "status", "--json").stdout)
        assert status["guests"][0]["state"] == "ready"
    finally:
        down = _lab(state, "down")
    assert down.returncode == 0, down.stderr
    fleet = FleetUnderTest(state, hosts=1, image=lab_image)
    assert fleet.leftovers(ports) == []
    assert not (state / "fleet.json").exists()
    assert json.loads(_lab(state, "status", "--json").stdout)["guests"] == []
