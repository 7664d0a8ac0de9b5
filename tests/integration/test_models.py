"""Seeded course models on the session fleet's two guests: the real deploys over SSH.

The instructor's store is filled from the stand-in registry (tests/fixtures/ollama_registry.py)
by the real client; Ollama on the guests is the stand-in release (its ``/api/tags`` reads the
copied store). One module-scoped install; the tests build on each other, in order.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpulab.lab.render import LOOPBACK
from gpulab.models.names import parse_model_name
from gpulab.models.registry import RegistryClient
from gpulab.models.store import Store
from tests.fixtures.http_server import StaticServer
from tests.fixtures.ollama_registry import PublishedModel, RegistryStandIn
from tests.fixtures.ollama_release import build_release
from tests.fleet import FleetUnderTest
from tests.phases import record_phase, timed
from tests.pyinfra_run import PyinfraResult, run_pyinfra

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.33.0"  # a stand-in release: its sha256sum.txt verifies it
GUESTS = ("lab-01", "lab-02")
MODELS = "/usr/share/ollama/.ollama/models"


@dataclass
class SeededRoom:
    fleet: FleetUnderTest
    model: PublishedModel
    data: dict[str, Any]
    tmp: Path

    def sh(self, name: str, command: str) -> str:
        proc = subprocess.run(["ssh", "-F", str(self.fleet.ssh_config), name, command],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, f"{name}: {command}: {proc.stdout}{proc.stderr}"
        return proc.stdout.strip()

    def deploy(self, label: str, *deploys: str) -> PyinfraResult:
        hosts = []
        for name in GUESTS:
            guest = self.fleet.guests[name]
            hosts.append((name, {
                "ssh_hostname": LOOPBACK, "ssh_port": guest.port, "ssh_user": "root",
                "ssh_key": str(self.fleet.ssh_key),
                "ssh_known_hosts_file": str(self.fleet.known_hosts),
                "ssh_strict_host_key_checking": "yes", **self.data,
            }))
        inventory = self.tmp / f"inventory-{label}.py"
        inventory.write_text(f"room = {hosts!r}\n")
        result = run_pyinfra(inventory, *(REPO / "deploy" / d for d in deploys), cwd=REPO,
                             timeout=900)
        record_phase(f"models: {label} (rc {result.rc})", result.seconds)
        return result

    def listed(self, name: str) -> dict[str, str]:
        tags = json.loads(self.sh(name, "curl -fsS --max-time 5 http://127.0.0.1:11434/api/tags"))
        return {entry["name"]: entry["digest"] for entry in tags["models"]}


@pytest.fixture(scope="module")
def room(fleet: FleetUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededRoom]:
    tmp = tmp_path_factory.mktemp("models-room")
    with StaticServer(tmp / "www") as releases, RegistryStandIn(tmp / "registry") as registry:
        build_release(releases.root, VERSION)
        model = registry.publish("qwen2.5:7b", payload_bytes=2 << 20)
        store = tmp / "store"
        RegistryClient().fetch(Store(store), parse_model_name("qwen2.5:7b"), registry.url)
        data = {"ollama_download_base": releases.guest_url, "ollama_version": VERSION,
                "models": ["qwen2.5:7b"], "models_distribution": "seeded",
                "models_store": str(store)}
        try:
            yield SeededRoom(fleet, model, data, tmp)
        finally:
            with timed("models: hand both guests back clean (reset + boot)"):
                for name in GUESTS:
                    fleet.stop(name)
                    fleet.reset(name)
                    fleet.start(name)


def test_seeded_models_are_listed_by_each_guests_ollama(room: SeededRoom) -> None:
    result = room.deploy("seeded", "ollama.py", "models.py")
    assert result.rc == 0, result.describe()
    for name in GUESTS:
        assert room.listed(name) == {"qwen2.5:7b": room.model.digest}
        owners = room.sh(name, f"stat -c %U {MODELS}/blobs/* {MODELS}/manifests/*/*/*/*")
        assert set(owners.split()) == {"ollama"}
        assert room.sh(name, f"ls -A {MODELS}/blobs | grep -c gpulab || true") == "0"


def test_second_run_changes_nothing(room: SeededRoom) -> None:
    result = room.deploy("seeded rerun", "models.py")
    assert result.rc == 0, result.describe()
    assert result.changed_hosts == [], result.describe()


def test_a_removed_blob_alone_comes_back(room: SeededRoom) -> None:
    blob = room.model.model_digest.replace(":", "-")
    room.sh("lab-02", f"rm {MODELS}/blobs/{blob}")
    result = room.deploy("one blob back", "models.py")
    assert result.rc == 0, result.describe()
    assert result.changed_hosts == ["lab-02"], result.describe()
    assert f"blob {blob[7:19]}" in result.output
    assert " manifest" not in result.output.replace("Models: manifests/", "")
    digest = room.sh("lab-02", f"sha256sum {MODELS}/blobs/{blob}").split()[0]
    assert digest == blob[7:]
    assert room.listed("lab-02") == {"qwen2.5:7b": room.model.digest}
