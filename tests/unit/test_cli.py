"""The command line, end to end in-process: compat, check, plan (recorded and live), facts."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from gpulab.cli import main

pytestmark = pytest.mark.unit

FACTS = Path(__file__).parents[1] / "plan" / "facts"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_compat_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "compat", "--driver", "560.35.03", "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["toolkit"], result["package"], result["min_driver"]) == (
        "12.6.2", "cuda-toolkit-12-6", "560.35.03",
    )


def test_compat_windows_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "compat", "--driver", "566.36", "--platform", "windows")
    assert code == 0 and "CUDA 12.6.3" in out
    code, _, err = _run(capsys, "compat", "--driver", "470.256.02")
    assert code == 1 and "older than every CUDA toolkit" in err
    code, _, err = _run(capsys, "compat", "--driver", "560.35.03", "--toolkit", "12.8")
    assert code == 1 and "needs driver 570.124.06" in err


def _inventory(tmp_path: Path, text: str, name: str = "room") -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return str(path)


def test_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = _inventory(tmp_path, 'hosts = ["a", ("b", {"driver_branch": 570})]\n')
    code, out, _ = _run(capsys, "check", good)
    assert code == 0 and "2 host(s), data valid" in out
    bad = _inventory(
        tmp_path, 'hosts = (["a", ("b", {"ollama_hots": 1})], {"driver_branch": 581})\n', "bad"
    )
    code, out, _ = _run(capsys, "check", bad)
    assert code == 1
    lines = out.splitlines()
    assert "a: driver_branch: driver branch 581 is unknown" in lines[0]
    assert "b: ollama_hots: unknown gpulab key; did you mean ollama_host?" in lines
    pin = _inventory(tmp_path, 'hosts = [("c", {"driver_branch": 535, "cuda_toolkit": "13.0"})]\n',
                     "pin")
    code, out, _ = _run(capsys, "check", pin)
    assert code == 1 and out.startswith("c: cuda_toolkit: driver_branch 535: CUDA 13.0.2 needs")
    code, out, _ = _run(capsys, "check", bad, "--json")
    assert code == 1 and json.loads(out)["valid"] is False


def test_check_missing_inventory(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "check", "/nonexistent/room.py")
    assert code == 1 and "no such inventory file" in err


def test_plan_from_recorded_facts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    hosts = [json.loads(path.read_text())["host"] for path in sorted(FACTS.glob("*.json"))]
    inventory = _inventory(tmp_path, f"hosts = {hosts!r}\n")
    code, out, err = _run(capsys, "plan", inventory, "--facts", str(FACTS), "--json")
    assert code == 0, err
    plans = {plan["host"]: plan for plan in json.loads(out)["plans"]}
    assert set(plans) == set(hosts)
    assert plans["lab-noble-5090"]["driver"]["flavour"] == "open"
    assert plans["wsl-jammy-566"]["driver"]["source"] is None
    assert plans["wsl-jammy-566"]["toolkit"]["version"] == "12.6.3"
    code, out, _ = _run(capsys, "plan", inventory, "--facts", str(FACTS),
                        "--limit", "lab-jammy-3070")
    assert code == 0 and out.startswith("lab-jammy-3070  [ubuntu-22.04]")
    assert "driver:  ubuntu 580 open" in out


def test_plan_names_hosts_without_facts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    inventory = _inventory(tmp_path, 'hosts = ["lab-jammy-3070", "pc-99"]\n')
    code, _, err = _run(capsys, "plan", inventory, "--facts", str(FACTS))
    assert code == 1 and "pc-99: facts: no recorded facts for this host" in err


def test_plan_reports_unreachable_hosts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inventory = _inventory(tmp_path, (
        f'hosts = [("pc-gone", {{"ssh_hostname": "127.0.0.1", "ssh_port": {port}, '
        '"ssh_connect_retries": 0})]\n'
    ))
    code, _, err = _run(capsys, "plan", inventory)
    assert code == 1 and "pc-gone: host: unreachable" in err


def test_facts_then_plan_round_trip_on_this_machine(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inventory = _inventory(tmp_path, 'hosts = ["@local"]\n')
    out_dir = tmp_path / "recorded"
    code, out, err = _run(capsys, "facts", inventory, "--out", str(out_dir))
    assert code == 0, err
    recorded = json.loads((out_dir / "@local.json").read_text())
    assert recorded["format"] == "gpulab-facts/1" and recorded["host"] == "@local"
    assert recorded["facts"]["os"]["id"] in ("debian", "ubuntu")
    code, out, err = _run(capsys, "plan", inventory, "--facts", str(out_dir))
    assert code == 0, err
    assert out.startswith("@local  [")


def test_plan_shows_the_vllm_wheel_and_memory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inventory = _inventory(tmp_path, (
        'hosts = [("lab-jammy-4090", {"vllm_enabled": True, "driver_branch": 550, '
        '"driver_source": "cuda-repo", "vllm_model": "Qwen/Qwen2.5-7B-Instruct"})]\n'
    ))
    code, out, _ = _run(capsys, "plan", inventory, "--facts",
                        str(FACTS / "ubuntu2204-rtx4090-550.json"))
    assert code == 0
    assert "  vllm:    vllm==0.26.0+cu129 — cu129 wheel (PyTorch 2.11) from " \
           "https://wheels.vllm.ai/0.26.0/cu129" in out
    assert "--gpu-memory-utilization 0.78 --max-model-len 8192" in out
