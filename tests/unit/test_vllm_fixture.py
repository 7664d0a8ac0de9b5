"""The TEST FIXTURE vLLM index: pip installs its wheel, and its ``vllm serve`` checks the key.

A test of test infrastructure: the same index and wheel the guest test uses, installed here
into a throwaway virtualenv from a loopback server, the way the deploy's pip command does.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.http_server import StaticServer
from tests.fixtures.vllm_index import build_index

pytestmark = pytest.mark.unit


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str, key: str | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_pip_installs_the_pinned_stand_in_and_serve_checks_the_key(tmp_path: Path) -> None:
    with StaticServer(tmp_path / "www") as server:
        build_index(server.root, "0.9.0", "0.26.0")
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--isolated", "--index-url",
                        f"{server.url}/simple", "vllm==0.26.0"], check=True)
        assert server.count("/packages/vllm-0.26.0-py3-none-any.whl", "GET") == 1
    port = _free_port()
    env = {"VLLM_API_KEY": "k-1", "HF_HOME": "/srv/hf", "PATH": "/usr/bin:/bin"}
    serve = subprocess.Popen([str(venv / "bin" / "vllm"), "serve", "acme/m", "--host",
                              "127.0.0.1", "--port", str(port)], env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                assert _get(f"{base}/health")[0] == 200
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the stand-in did not start"
                time.sleep(0.2)
        assert _get(f"{base}/v1/models")[0] == 401
        assert _get(f"{base}/v1/models", key="wrong")[0] == 401
        status, body = _get(f"{base}/v1/models", key="k-1")
        assert status == 200 and body == {"object": "list", "data": [
            {"id": "acme/m", "object": "model", "owned_by": "vllm", "root": "acme/m"}]}
        status, seen = _get(f"{base}/stub/args")
        assert seen == {"argv": ["serve", "acme/m", "--host", "127.0.0.1", "--port", str(port)],
                        "env": {"HF_HOME": "/srv/hf"}, "key_set": True}
    finally:
        serve.terminate()
        serve.wait(timeout=10)
