"""A download host that cannot be reached is said once; only started transfers are retried.

The script runs for real with ``sh``; ``curl`` and ``sleep`` are replaced on ``PATH`` by
recorders that exit with a chosen status, so each curl exit code is exercised without a
network. One case uses the real curl against a closed loopback port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from gpulab.plan.ollama import Layout, fetch_script
from tests.needs import skip_or_fail

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _curl_installed() -> None:
    if not shutil.which("curl"):
        skip_or_fail("the fetch script runs curl, which is not installed")

SHA = "0" * 64


def _layout(tmp_path: Path) -> Layout:
    return Layout(opt_dir=str(tmp_path / "opt"), cache_dir=str(tmp_path / "cache"),
                  bin_link=str(tmp_path / "bin/ollama"), lib_link=str(tmp_path / "lib/ollama"))


def _with_fake_curl(tmp_path: Path, exit_code: int) -> dict[str, str]:
    fake = tmp_path / "fakebin"
    fake.mkdir()
    calls = tmp_path / "curl-calls"
    (fake / "curl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit {exit_code}\n')
    (fake / "sleep").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("curl", "sleep"):
        (fake / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}


def _curl_calls(tmp_path: Path) -> int:
    calls = tmp_path / "curl-calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def _run(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                          env=env, check=False)


@pytest.mark.parametrize(("code", "why"), [(6, "does not resolve"), (7, "accepts connections"),
                                           (5, "proxy")])
def test_unreachable_host_fails_at_once_with_one_line(
    tmp_path: Path, code: int, why: str
) -> None:
    script = fetch_script("0.34.2", "x86_64", "https://dl.example.test", SHA,
                          layout=_layout(tmp_path))
    result = _run(script, _with_fake_curl(tmp_path, code))
    assert result.returncode == 1
    assert _curl_calls(tmp_path) == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert why in lines[0] and "ollama_download_base" in lines[0]
    assert "https://dl.example.test/v0.34.2/ollama-linux-amd64.tar.zst" in lines[0]


def test_unreachable_checksum_list_fails_at_once(tmp_path: Path) -> None:
    script = fetch_script("0.13.5", "x86_64", "https://dl.example.test", None,
                          layout=_layout(tmp_path))
    result = _run(script, _with_fake_curl(tmp_path, 6))
    assert result.returncode == 1 and _curl_calls(tmp_path) == 1
    assert "sha256sum.txt" in result.stderr and "ollama_sha256" in result.stderr


def test_transfer_that_broke_off_is_retried(tmp_path: Path) -> None:
    script = fetch_script("0.34.2", "x86_64", "https://dl.example.test", SHA,
                          layout=_layout(tmp_path))
    result = _run(script, _with_fake_curl(tmp_path, 18))  # partial file
    assert result.returncode == 1
    assert _curl_calls(tmp_path) == 5
    assert "5 tries" in result.stderr


def test_real_curl_connection_refused_on_loopback(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the socket is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = fetch_script("0.34.2", "x86_64", f"http://127.0.0.1:{port}", SHA,
                          layout=_layout(tmp_path))
    result = _run(script)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "accepts connections" in result.stderr
