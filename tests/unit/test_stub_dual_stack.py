"""The Ollama stand-in listens as Ollama does: ``0.0.0.0`` is one dual-stack socket.

Go's ``net.Listen("tcp", "0.0.0.0:11434")`` opens an IPv6 socket with IPV6_V6ONLY off
(``*:11434`` in ss), so the guest tests' firewall must also hold on IPv6.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

STUB = Path(__file__).resolve().parents[1] / "fixtures" / "ollama_stub.py"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("listen", ["0.0.0.0:{port}", ":{port}", "[::]:{port}"])
def test_wildcard_listen_answers_on_ipv4_and_ipv6_loopback(tmp_path: Path, listen: str) -> None:
    if not _has_ipv6_loopback():
        if os.environ.get("CI"):
            pytest.fail("CI: this machine has no ::1, the dual-stack check cannot run")
        pytest.skip("SKIPPED LOUDLY: no IPv6 loopback (::1) on this machine")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
    env |= {"OLLAMA_HOST": listen.format(port=port), "HOME": str(tmp_path),
            "OLLAMA_MODELS": str(tmp_path / "models")}
    proc = subprocess.Popen([sys.executable, str(STUB), "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        answers = {}
        deadline = time.monotonic() + 10
        for address in ("127.0.0.1", "[::1]"):
            while True:
                try:
                    with urllib.request.urlopen(f"http://{address}:{port}/", timeout=1) as reply:
                        answers[address] = reply.read().decode()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"{address}: {proc.communicate()}") from None
                    time.sleep(0.05)
        assert answers == {"127.0.0.1": "Ollama is running", "[::1]": "Ollama is running"}
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert f"Listening on [::]:{port}" in stderr
