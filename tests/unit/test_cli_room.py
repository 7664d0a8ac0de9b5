"""``gpulab plan`` as a new user runs it: unreachable hosts, recorded facts, package names.

The CLI runs as a subprocess in a temporary directory; unreachable hosts are closed ports on
127.0.0.1 (connection refused), so nothing leaves this machine.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

FACTS = Path(__file__).resolve().parents[1] / "plan" / "facts"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _gpulab(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpulab.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def _inventory(tmp_path: Path, hosts: list[tuple[str, dict[str, object]]]) -> Path:
    path = tmp_path / "room.py"
    path.write_text(f"room = {hosts!r}\n")
    return path


def test_unreachable_hosts_get_one_line_each_and_the_details_go_to_a_log(tmp_path: Path) -> None:
    inventory = _inventory(tmp_path, [
        (f"pc-10{i}", {"ssh_hostname": "127.0.0.1", "ssh_port": _closed_port()}) for i in (1, 2)
    ])
    result = _gpulab(tmp_path, "plan", str(inventory))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["pc-101", "pc-102"], result.stderr
    for line in lines:
        assert "unreachable" in line and "ssh_port" in line and ".gpulab/gpulab.log" in line
    assert "Traceback" not in result.stderr and "No hosts remaining" not in result.stderr
    assert "Could not connect" in (tmp_path / ".gpulab" / "gpulab.log").read_text()


def test_debug_prints_pyinfras_messages(tmp_path: Path) -> None:
    inventory = _inventory(tmp_path, [("pc-101", {"ssh_hostname": "127.0.0.1",
                                                  "ssh_port": _closed_port()})])
    result = _gpulab(tmp_path, "plan", "--debug", str(inventory))
    assert result.returncode == 1
    assert "Connecting to: 127.0.0.1" in result.stderr
    assert not (tmp_path / ".gpulab").exists()


def test_plan_honours_recorded_facts_and_lists_packages(tmp_path: Path) -> None:
    inventory = _inventory(tmp_path, [("@fake/pc-101", {
        "gpulab_recorded_facts": str(FACTS / "ubuntu2404-rtx5090.json")})])
    result = _gpulab(tmp_path, "plan", str(inventory))
    assert result.returncode == 0, result.stderr
    assert "[ubuntu-24.04]" in result.stdout
    packages = next(line for line in result.stdout.splitlines() if "driver packages:" in line)
    assert "nvidia" in packages
    assert "cuda package: cuda-toolkit-" in result.stdout


@pytest.mark.parametrize(("host", "value", "message"), [
    ("pc-101", str(FACTS / "ubuntu2404-rtx5090.json"), "only for pyinfra's @fake"),
    ("@fake/pc-101", "ubuntu2404-rtx5090.json", "must be an absolute path"),
    ("@fake/pc-101", "/nonexistent/pc.json", "cannot read /nonexistent/pc.json"),
    ("@fake/pc-101", "{inventory}", "is no `gpulab facts` file"),
])
def test_recorded_facts_are_checked_like_other_keys(
    tmp_path: Path, host: str, value: str, message: str
) -> None:
    inventory = tmp_path / "room.py"
    data = {"gpulab_recorded_facts": value.format(inventory=inventory)}
    _inventory(tmp_path, [(host, data)])
    result = _gpulab(tmp_path, "check", str(inventory))
    assert result.returncode == 1
    assert f"{host}: gpulab_recorded_facts: " in result.stdout and message in result.stdout


def test_unknown_gpulab_key_is_an_error(tmp_path: Path) -> None:
    inventory = _inventory(tmp_path, [("@fake/pc-101", {"gpulab_recorded_fact": "/x.json"})])
    result = _gpulab(tmp_path, "check", str(inventory))
    assert result.returncode == 1 and "did you mean gpulab_recorded_facts" in result.stdout
