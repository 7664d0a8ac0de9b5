"""Direct mode end to end on this machine: the deploy's pull client, the stand-in Ollama's
``/api/pull`` and the stand-in registry (stream, error line, already present, mirror copy)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.ollama_registry import PublishedModel, RegistryStandIn

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
STUB = REPO / "tests" / "fixtures" / "ollama_stub.py"
CLIENT = REPO / "templates" / "models" / "ollama-pull.py.j2"  # no Jinja inside: run as is


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def room(tmp_path: Path) -> Iterator[dict[str, Any]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
    env |= {"OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(tmp_path / "models"),
            "HOME": str(tmp_path)}
    with RegistryStandIn(tmp_path / "registry") as registry:
        model = registry.publish("qwen2.5:7b", payload_bytes=64 * 1024)
        proc = subprocess.Popen([sys.executable, str(STUB), "serve"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        api = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(api + "/", timeout=1).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "stub did not start"
                time.sleep(0.05)
        try:
            yield {"api": api, "registry": registry, "model": model}
        finally:
            proc.kill()
            proc.wait()


def pull(room: dict[str, Any], name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CLIENT), room["api"], name, *extra],
                          capture_output=True, text=True, timeout=60, check=False)


def tags(room: dict[str, Any]) -> dict[str, str]:
    with urllib.request.urlopen(room["api"] + "/api/tags", timeout=5) as reply:
        return {m["name"]: m["digest"] for m in json.load(reply)["models"]}


def test_pull_through_a_mirror_streams_and_lands_under_the_canonical_name(
    room: dict[str, Any]
) -> None:
    registry: RegistryStandIn = room["registry"]
    model: PublishedModel = room["model"]
    mirror_name = f"http://127.0.0.1:{registry.port}/library/qwen2.5:7b"
    done = pull(room, mirror_name, "--insecure", "--copy-to", "qwen2.5:7b")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith(": pulling manifest") and lines[-1].endswith("copied to qwen2.5:7b")
    assert any(line.endswith(": success") for line in lines)
    assert tags(room)["qwen2.5:7b"] == model.digest
    assert registry.blob_bytes_served() == model.total_size

    registry.cdn.clear_log()
    again = pull(room, mirror_name, "--insecure", "--copy-to", "qwen2.5:7b")
    assert again.returncode == 0, again.stderr
    assert registry.cdn.requests == []  # already present: no blob downloaded again


def test_an_error_line_fails_with_its_message(room: dict[str, Any]) -> None:
    port = room["registry"].port
    missing = pull(room, f"http://127.0.0.1:{port}/library/nosuch:1b", "--insecure")
    assert missing.returncode == 1
    assert "Ollama refused the pull: pull model manifest" in missing.stderr
    insecure = pull(room, f"http://127.0.0.1:{port}/library/qwen2.5:7b")
    assert insecure.returncode == 1 and "insecure protocol http" in insecure.stderr


def test_network_errors_are_retried_then_reported(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    script = CLIENT.read_text().replace("RETRIES = 6", "RETRIES = 1")
    fast = tmp_path / "ollama-pull"
    fast.write_text(script)
    done = subprocess.run([sys.executable, str(fast), dead, "qwen2.5:7b"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert "retrying" in done.stderr and "(1 retries)" in done.stderr
