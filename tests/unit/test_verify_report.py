"""gpulab verify's report, exit status, ssh_config and command line, without guests.

The command-line test verifies this machine as ``@local`` next to a host whose SSH port on
127.0.0.1 is closed: the closed one is named unreachable (exit 2), the local one still checked.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gpulab.verify.connection import ConnectionDataError, ssh_config_block, target_for
from gpulab.verify.probes import CHECK_NAMES, REACHABLE
from gpulab.verify.report import build_report, exit_status, render_html, unreachable_hosts

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
HELD = "Is the driver held?"


def _rows(host: str, status: str = "pass", **special: tuple[str, str]) -> list[dict[str, str]]:
    rows = []
    for check in CHECK_NAMES:
        state, message = special.get(check, (status, f"{check} ok"))
        rows.append({"host": host, "check": check, "status": state, "message": message})
    return rows


def test_report_schema_order_and_ready() -> None:
    rows = _rows("b") + _rows("a", **{HELD: ("fail", "not held: nvidia-driver. Fix: hold")})
    report = build_report(list(reversed(rows)), ["a", "b"])
    assert [h["name"] for h in report["hosts"]] == ["a", "b"]
    first = report["hosts"][0]
    assert set(first) == {"name", "ready", "checks"}
    assert [c["name"] for c in first["checks"]] == list(CHECK_NAMES)
    assert all(set(c) == {"name", "status", "message"} for c in first["checks"])
    assert first["ready"] is False and report["hosts"][1]["ready"] is True
    assert exit_status(report) == 1
    assert exit_status(build_report(_rows("b"), ["b"])) == 0


def test_a_check_that_never_reported_is_a_failure() -> None:
    rows = [r for r in _rows("a") if r["check"] != HELD]
    report = build_report(rows, ["a"])
    held = next(c for c in report["hosts"][0]["checks"] if c["name"] == HELD)
    assert held["status"] == "fail" and "did not run" in held["message"]
    assert exit_status(report) == 1


def test_unreachable_is_exit_2_and_listed_first_in_html() -> None:
    lost = _rows("lab-02", "n/a", **{REACHABLE: ("fail", "lab-02 could not be reached")})
    report = build_report(_rows("lab-01") + lost, ["lab-01", "lab-02"])
    assert unreachable_hosts(report) == ["lab-02"]
    assert exit_status(report) == 2
    page = render_html(report)
    assert page.index(">lab-02<") < page.index(">lab-01<")
    assert "unreachable: lab-02" in page


def test_html_is_self_contained_and_escapes_messages() -> None:
    rows = _rows("a", **{HELD: ("fail", "<script>x</script> not held")})
    page = render_html(build_report(rows, ["a"]))
    assert "<script>" not in page and "&lt;script&gt;" in page
    for external in ("http://", "https://", "<link", "src="):
        assert external not in page
    assert 'data-status="fail"' in page and 'class="fail"' in page


def test_ssh_config_from_pyinfra_data(tmp_path: Path) -> None:
    data = {"ssh_hostname": "127.0.0.1", "ssh_port": 2201, "ssh_user": "root",
            "ssh_key": "/keys/id ed25519", "ssh_known_hosts_file": "/k/known_hosts",
            "ssh_strict_host_key_checking": "yes", "ssh_config_file": "/etc/room.conf"}
    text = ssh_config_block("lab-01", data, tmp_path)
    assert text.splitlines()[:9] == [
        "Host lab-01", "    HostName 127.0.0.1", "    Port 2201", "    User root",
        '    IdentityFile "/keys/id ed25519"', "    IdentitiesOnly yes",
        "    UserKnownHostsFile /k/known_hosts", "    StrictHostKeyChecking yes",
        "    BatchMode yes",
    ]
    assert text.rstrip().endswith("Include /etc/room.conf")


def test_passwords_and_fake_hosts_are_refused_with_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(ConnectionDataError, match="ssh_key"):
        ssh_config_block("h", {"ssh_password": "x"}, tmp_path)
    with pytest.raises(ConnectionDataError, match="@fake"):
        target_for("@fake/gpu", {}, "gpulab_recorded_facts")
    local = target_for("@local", {"_sudo": True}, "gpulab_recorded_facts")
    assert local.hostspec == "local://" and local.sudo


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpulab.cli", "verify", *args],
                          capture_output=True, text=True, timeout=300, check=False, cwd=REPO)


def test_cli_names_the_unreachable_host_and_checks_the_other(tmp_path: Path) -> None:
    inventory = tmp_path / "room.py"
    inventory.write_text(
        "room = [\n"
        "    '@local',\n"
        f"    ('gone-01', {{'ssh_hostname': '127.0.0.1', 'ssh_port': {_closed_port()}}}),\n"
        "]\n"
    )
    page = tmp_path / "room.html"
    done = _verify(str(inventory), "--json", "--html", str(page))
    assert done.returncode == 2, done.stderr
    report = json.loads(done.stdout)
    hosts = {host["name"]: host for host in report["hosts"]}
    assert set(hosts) == {"@local", "gone-01"}
    gone = hosts["gone-01"]["checks"]
    assert gone[0]["name"] == REACHABLE and gone[0]["status"] == "fail"
    assert "gone-01 could not be reached" in gone[0]["message"]
    assert all(c["status"] == "n/a" for c in gone[1:])
    local = hosts["@local"]["checks"]
    assert local[0]["status"] == "pass"
    assert [c["name"] for c in local] == list(CHECK_NAMES)
    assert page.read_text().index(">gone-01<") < page.read_text().index(">@local<")


def test_cli_usage_errors_are_exit_2(tmp_path: Path) -> None:
    assert _verify(str(tmp_path / "missing.py")).returncode == 2
    inventory = tmp_path / "bad.py"
    inventory.write_text("room = [('h', {'ollama_versoin': '1'})]\n")
    done = _verify(str(inventory))
    assert done.returncode == 2 and "ollama_versoin" in done.stderr
    inventory.write_text("room = ['@local']\n")
    done = _verify(str(inventory), "--limit", "nobody")
    assert done.returncode == 2 and "nobody" in done.stderr


class _Result:
    def __init__(self, rc: int, stdout: str) -> None:
        self.rc, self.stdout, self.stderr = rc, stdout, ""


class _RecordedHost:
    """A testinfra host answering each command from a table of recorded outputs."""

    def __init__(self, answers: dict[str, tuple[int, str]], binaries: set[str]) -> None:
        self.answers, self.binaries, self.commands = answers, binaries, []

    def exists(self, command: str) -> bool:
        return command in self.binaries

    def run(self, command: str) -> _Result:
        self.commands.append(command)
        for needle, (rc, out) in self.answers.items():
            if needle in command:
                return _Result(rc, out)
        return _Result(1, "")


def test_pyinfra_facts_through_testinfra_keep_pyinfra_semantics() -> None:
    from pyinfra.api.facts import FactBase

    from gpulab.facts.nvidia import LoadedDriverVersion, NvidiaSmi
    from gpulab.facts.system import OsRelease
    from gpulab.verify.probes import TestinfraFacts

    os_release = (REPO / "tests/data/recorded/os-release-debian12.txt").read_text()
    host = _RecordedHost({"os-release": (0, os_release.split("\n", 1)[1]),
                          "/sys/module/nvidia/version": (0, "")}, binaries=set())
    facts = TestinfraFacts(host)
    assert facts.get_fact(OsRelease).id == "debian"
    assert facts.get_fact(LoadedDriverVersion) is None  # no output: pyinfra's default()
    assert facts.get_fact(NvidiaSmi).exit_code is None  # failed command: default()

    class Mokutil(FactBase[str]):
        def requires_command(self) -> str:
            return "mokutil"

        def command(self) -> str:
            return "mokutil --sb-state"

        @staticmethod
        def default() -> str:
            return "absent"

    assert facts.get_fact(Mokutil) == "absent"
    assert not any("mokutil" in c for c in host.commands)  # missing binary: not even run
