"""vLLM on a real Debian 12 guest: the real deploy, run with the pyinfra CLI over SSH.

Two stand-ins, both TEST FIXTURES reached only through data keys the product has anyway:
- the package: ``vllm_pip_index_url`` points at a local index (``tests/fixtures/
  vllm_index.py``) holding a small wheel named ``vllm`` whose ``vllm serve`` answers
  ``/v1/models`` and checks the key; the guest reaches it at ``10.0.2.2``;
- the GPU: the guest has none, so the plan is made from recorded facts of an RTX 4090 with a
  580 driver (``tests/fixtures/facts/lab-guest-gpu-standin.json`` through the
  ``gpulab_stand_in_facts`` key); every operation still runs on the guest.
The model download is left to vLLM (``vllm_model_download: false``): no model is served.

Everything else is real: python3-venv from apt, the virtualenv, pip with the index setting,
the ``vllm`` user, the unit, the root-only key file, restart on a key change, disabling.
The tests share lab-02 and build on each other, in order.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpulab.lab.render import LOOPBACK
from tests.fixtures.http_server import StaticServer
from tests.fixtures.vllm_index import IndexedWheel, build_index
from tests.fleet import FleetUnderTest
from tests.integration.outcomes import assert_unchanged, verify
from tests.phases import record_phase
from tests.pyinfra_run import PyinfraResult, run_pyinfra

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "vllm.py"
STANDIN_FACTS = REPO / "tests" / "fixtures" / "facts" / "lab-guest-gpu-standin.json"
VERSION = "0.26.0"
MODEL = "Qwen/Qwen2.5-7B-Instruct-AWQ"
GUEST = "lab-02"  # the suite's scratch guest


@dataclass
class VllmLab:
    """lab-02, the index server and the deploy run with the test's data."""

    fleet: FleetUnderTest
    server: StaticServer
    wheel: IndexedWheel
    tmp: Path

    def sh(self, command: str) -> tuple[int, str]:
        proc = subprocess.run(["ssh", "-F", str(self.fleet.ssh_config), GUEST, command],
                              capture_output=True, text=True, timeout=60, check=False)
        return proc.returncode, (proc.stdout + proc.stderr).strip()

    def out(self, command: str) -> str:
        rc, text = self.sh(command)
        assert rc == 0, f"{command}: rc={rc}\n{text}"
        return text

    def deploy(self, label: str, **data: Any) -> PyinfraResult:
        guest = self.fleet.guests[GUEST]
        host_data = {
            "ssh_hostname": LOOPBACK, "ssh_port": guest.port, "ssh_user": "root",
            "ssh_key": str(self.fleet.ssh_key),
            "ssh_known_hosts_file": str(self.fleet.known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "gpulab_stand_in_facts": str(STANDIN_FACTS),
            "vllm_enabled": True, "vllm_model": MODEL, "vllm_version": VERSION,
            "vllm_pip_index_url": f"{self.server.guest_url}/simple",
            "vllm_model_download": False,
            "driver_branch": 580,  # the stand-in's branch: the plan picks the default wheel
            **data,
        }
        inventory = self.tmp / f"inventory-{label}.py"
        inventory.write_text(f"lab = [({GUEST!r}, {host_data!r})]\n")
        result = run_pyinfra(inventory, DEPLOY, cwd=REPO, timeout=900)
        record_phase(f"vllm: {label} (rc {result.rc})", result.seconds)
        return result

    def models(self, key: str | None) -> tuple[str, Any]:
        """``GET /v1/models`` on the guest: the HTTP status and the body."""
        header = f"-H 'Authorization: Bearer {key}' " if key else ""
        text = self.out(f"curl -sS --max-time 5 -w '\\n%{{http_code}}' {header}"
                        "http://127.0.0.1:8000/v1/models")
        body, _, status = text.rpartition("\n")
        return status, json.loads(body)

    def wait_up(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.sh("curl -fsS --max-time 3 http://127.0.0.1:8000/health")[0] == 0:
                return
            time.sleep(1)
        raise AssertionError(self.sh("systemctl status vllm --no-pager")[1])

    def starts(self) -> int:
        _, text = self.sh("journalctl -b -u vllm.service --no-pager -o cat")
        return sum(1 for line in text.splitlines() if line.startswith("Started vllm"))


@pytest.fixture(scope="module")
def lab(fleet: FleetUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmLab]:
    tmp = tmp_path_factory.mktemp("vllm-lab")
    with StaticServer(tmp / "www") as server:
        wheel = build_index(server.root, "0.9.0", VERSION)[VERSION]
        try:
            yield VllmLab(fleet, server, wheel, tmp)
        finally:
            fleet.hand_back_clean(GUEST, "vllm")


def test_fresh_install_serves_behind_the_key_from_a_root_only_file(lab: VllmLab) -> None:
    result = lab.deploy("fresh", vllm_api_key="k-first")
    assert result.rc == 0, result.describe()
    lab.wait_up()
    assert lab.out("systemctl is-active vllm") == "active"
    assert lab.out("systemctl is-enabled vllm") == "enabled"
    pid = lab.out("systemctl show -p MainPID --value vllm")
    assert lab.out(f"ps -o user= -p {pid}") == "vllm"
    assert "k-first" not in lab.out(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert lab.out("stat -c '%a %U %G' /etc/gpulab/vllm.env") == "600 root root"
    assert lab.sh("grep -l k-first /etc/systemd/system/vllm.service")[0] != 0
    assert lab.out("cat /opt/vllm/.gpulab-installed") == (
        f"vllm=={VERSION} from {lab.server.guest_url}/simple")
    assert lab.models(None)[0] == "401"
    assert lab.models("wrong")[0] == "401"
    status, body = lab.models("k-first")
    assert status == "200" and [m["id"] for m in body["data"]] == [MODEL]
    seen = json.loads(lab.out("curl -fsS http://127.0.0.1:8000/stub/args"))
    assert seen["argv"] == ["serve", MODEL, "--host", "127.0.0.1", "--port", "8000",
                            "--gpu-memory-utilization", "0.78", "--max-model-len", "8192"]
    assert seen["env"]["HF_HOME"] == "/var/lib/vllm/huggingface"
    assert lab.out("stat -c %U /var/lib/vllm/huggingface") == "vllm"
    assert lab.server.count(f"/{lab.wheel.url_path}", "GET") == 1
    assert lab.starts() == 1


def test_second_run_changes_nothing(lab: VllmLab) -> None:
    assert_unchanged(lab.deploy("rerun", vllm_api_key="k-first"), [GUEST])
    assert lab.server.count(f"/{lab.wheel.url_path}", "GET") == 1
    assert lab.starts() == 1


def test_a_new_key_restarts_once_and_the_old_one_is_refused(lab: VllmLab) -> None:
    result = lab.deploy("new-key", vllm_api_key="k-second")
    assert result.rc == 0, result.describe()
    lab.wait_up()
    assert lab.starts() == 2
    assert lab.models("k-first")[0] == "401"
    assert lab.models("k-second")[0] == "200"
    assert lab.server.count(f"/{lab.wheel.url_path}", "GET") == 1  # the venv was kept
    # gpulab verify from the same inventory: the vLLM checks pass (the rest of the host is
    # not deployed by deploy/vllm.py, and its GPU is a stand-in, so only these are asked)
    checks = verify(lab.tmp / "inventory-new-key.py", "--limit", GUEST,
                    label="vllm lab").hosts[GUEST]
    assert checks["Is vLLM enabled and running as vllm?"] == (
        "pass", "enabled, active, runs as vllm")
    assert checks["Does vLLM serve the planned model?"] == ("pass", f"serves {MODEL}")
    assert checks["Does vLLM refuse requests without the key?"] == (
        "pass", "http://127.0.0.1:8000/v1/models without the key: 401")


def test_disabling_stops_the_service_and_keeps_the_venv(lab: VllmLab) -> None:
    result = lab.deploy("disable", vllm_enabled=False)
    assert result.rc == 0, result.describe()
    assert lab.sh("systemctl is-active vllm")[1] in ("inactive", "unknown")
    assert lab.sh("test -e /etc/systemd/system/vllm.service")[0] != 0
    assert lab.sh("test -e /etc/gpulab/vllm.env")[0] != 0
    assert lab.sh("curl -fsS --max-time 3 http://127.0.0.1:8000/health")[0] != 0
    assert lab.out("test -x /opt/vllm/bin/vllm && echo kept") == "kept"
    assert_unchanged(lab.deploy("disable-rerun", vllm_enabled=False), [GUEST])
    checks = verify(lab.tmp / "inventory-disable.py", "--limit", GUEST,
                    label="vllm lab, disabled").hosts[GUEST]
    assert checks["Is vLLM enabled and running as vllm?"] == ("n/a", "vllm_enabled is false")
