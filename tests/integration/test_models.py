"""Course models on the session fleet's two guests: the real deploys over SSH.

Seeded: the instructor's store is filled from the stand-in registry
(tests/fixtures/ollama_registry.py) by the real client; Ollama on the guests is the stand-in
release (its ``/api/tags`` reads the copied store). Direct: each guest's stand-in Ollama pulls
(``/api/pull``) from a second stand-in registry, the "mirror", which guests reach at 10.0.2.2.
One module-scoped install; the tests build on each other, in order, and end with
``gpulab verify`` on the inventory of the last successful deploy.
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
from tests.fixtures.http_server import QEMU_USER_NET_HOST, StaticServer
from tests.fixtures.ollama_registry import PublishedModel, RegistryStandIn
from tests.fixtures.ollama_release import build_release
from tests.fleet import FleetUnderTest, inventory_with
from tests.integration.outcomes import assert_ready, assert_unchanged, verify
from tests.phases import record_phase
from tests.pyinfra_run import PyinfraResult, run_pyinfra

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.33.0"  # a stand-in release: its sha256sum.txt verifies it
GUESTS = ("lab-01", "lab-02")
MODELS = "/usr/share/ollama/.ollama/models"
PULLED = "llama3.2:1b"  # published on the mirror only: direct mode pulls it


@dataclass
class SeededRoom:
    fleet: FleetUnderTest
    model: PublishedModel
    data: dict[str, Any]
    tmp: Path
    mirror: RegistryStandIn
    pulled: PublishedModel

    def sh(self, name: str, command: str) -> str:
        proc = subprocess.run(["ssh", "-F", str(self.fleet.ssh_config), name, command],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, f"{name}: {command}: {proc.stdout}{proc.stderr}"
        return proc.stdout.strip()

    def inventory(self, label: str) -> Path:
        return self.tmp / f"inventory-{label.replace(' ', '-')}.py"

    def deploy(self, label: str, *deploys: str, **data: Any) -> PyinfraResult:
        """The deploys with the room's data, ``data`` on top; the inventory stays for verify."""
        inventory = inventory_with(self.fleet, {**self.data, **data}, self.inventory(label))
        result = run_pyinfra(inventory, *(REPO / "deploy" / d for d in deploys), cwd=REPO,
                             timeout=900)
        record_phase(f"models: {label} (rc {result.rc})", result.seconds)
        return result

    def corrupt(self, name: str, digest: str) -> str:
        """Flip one byte of a blob on a guest, keeping its size; the blob's path."""
        blob = f"{MODELS}/blobs/" + digest.replace(":", "-")
        size = self.sh(name, f"stat -c %s {blob}")
        flip = ("import sys; f = open(sys.argv[1], 'r+b'); f.seek(100); b = f.read(1); "
                "f.seek(100); f.write(bytes([b[0] ^ 1]))")
        self.sh(name, f"python3 -c \"{flip}\" {blob}")
        assert self.sh(name, f"stat -c %s {blob}") == size
        assert self.sh(name, f"sha256sum {blob}").split()[0] != blob[-64:]
        return blob

    def listed(self, name: str) -> dict[str, str]:
        tags = json.loads(self.sh(name, "curl -fsS --max-time 5 http://127.0.0.1:11434/api/tags"))
        return {entry["name"]: entry["digest"] for entry in tags["models"]}


@pytest.fixture(scope="module")
def room(fleet: FleetUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededRoom]:
    tmp = tmp_path_factory.mktemp("models-room")
    # The mirror redirects its blob GETs to 10.0.2.2 (this machine, as guests see it).
    mirror = RegistryStandIn(tmp / "mirror", cdn_host=LOOPBACK, redirect_host=QEMU_USER_NET_HOST)
    with StaticServer(tmp / "www") as releases, RegistryStandIn(tmp / "registry") as registry, \
            mirror:
        build_release(releases.root, VERSION)
        model = registry.publish("qwen2.5:7b", payload_bytes=2 << 20)
        pulled = mirror.publish(PULLED, payload_bytes=1 << 20, architecture="llama")
        store = tmp / "store"
        RegistryClient().fetch(Store(store), parse_model_name("qwen2.5:7b"), registry.url)
        data = {"ollama_download_base": releases.guest_url, "ollama_version": VERSION,
                "models": ["qwen2.5:7b"], "models_distribution": "seeded",
                "models_store": str(store)}
        try:
            yield SeededRoom(fleet, model, data, tmp, mirror, pulled)
        finally:
            for name in GUESTS:
                fleet.hand_back_clean(name, "models")


def test_seeded_models_are_listed_by_each_guests_ollama(room: SeededRoom) -> None:
    result = room.deploy("seeded", "ollama.py", "models.py")
    assert result.rc == 0, result.describe()
    for name in GUESTS:
        assert room.listed(name) == {"qwen2.5:7b": room.model.digest}
        owners = room.sh(name, f"stat -c %U {MODELS}/blobs/* {MODELS}/manifests/*/*/*/*")
        assert set(owners.split()) == {"ollama"}
        assert room.sh(name, f"ls -A {MODELS}/blobs | grep -c gpulab || true") == "0"
        assert room.sh(name, f"test ! -e {MODELS}/.gpulab-incoming && echo gone") == "gone"
        # every blob gpulab placed is recorded as checked: a rerun hashes none of them
        stamped = room.sh(name, f"cut -d' ' -f1 {MODELS}/.gpulab-verified | sort -u")
        assert stamped.split() == sorted(d.replace(":", "-") for d in room.model.blobs)


def test_second_run_changes_nothing(room: SeededRoom) -> None:
    assert_unchanged(room.deploy("seeded rerun", "models.py"), GUESTS)


def test_a_removed_blob_alone_comes_back_resuming_a_partial_copy(room: SeededRoom) -> None:
    """The blob is gone and an interrupted copy left a partial file whose tail is wrong:
    rsync resumes from it, the host's sha256 check passes, the staging directory is gone."""
    blob = room.model.model_digest.replace(":", "-")
    partial = f"{MODELS}/.gpulab-incoming/{blob}"
    room.sh("lab-02", f"mkdir -p {MODELS}/.gpulab-incoming && "
                      f"head -c $(($(stat -c %s {MODELS}/blobs/{blob}) / 2)) {MODELS}/blobs/{blob} "
                      f"> {partial} && "
                      f"head -c 5000 /dev/urandom >> {partial} && rm {MODELS}/blobs/{blob}")
    result = room.deploy("one blob back", "models.py")
    assert result.rc == 0, result.describe()
    assert result.changed_hosts == ["lab-02"], result.describe()
    assert f"1 blob ({blob[7:19]}) sent by rsync" in result.output
    assert room.sh("lab-02", f"test ! -e {MODELS}/.gpulab-incoming && echo gone") == "gone"
    assert " manifest" not in result.output.replace("Models: manifests/", "")
    digest = room.sh("lab-02", f"sha256sum {MODELS}/blobs/{blob}").split()[0]
    assert digest == blob[7:]
    assert room.listed("lab-02") == {"qwen2.5:7b": room.model.digest}


def test_a_corrupt_blob_of_the_same_size_is_sent_again(room: SeededRoom) -> None:
    """One byte flipped, the size kept: only gpulab's own sha256 check can see it."""
    blob = room.corrupt("lab-01", room.model.model_digest)
    result = room.deploy("corrupt blob back", "models.py")
    assert result.rc == 0, result.describe()
    assert result.changed_hosts == ["lab-01"], result.describe()
    assert f"1 blob ({blob[-64:-52]}) sent by rsync" in result.output
    assert room.sh("lab-01", f"sha256sum {blob}").split()[0] == blob[-64:]
    assert room.listed("lab-01") == {"qwen2.5:7b": room.model.digest}
    assert_unchanged(room.deploy("corrupt blob rerun", "models.py"), GUESTS)


def _direct(room: SeededRoom, *extra: str) -> dict[str, Any]:
    return {"models_distribution": "direct", "models_registry": room.mirror.guest_url,
            "models": ["qwen2.5:7b", PULLED, *extra]}


def test_direct_pulls_through_each_guests_ollama_under_the_canonical_name(
    room: SeededRoom
) -> None:
    result = room.deploy("direct", "models.py", **_direct(room))
    assert result.rc == 0, result.describe()
    for name in GUESTS:
        listed = room.listed(name)
        assert listed[PULLED] == room.pulled.digest, listed
        assert listed["qwen2.5:7b"] == room.model.digest  # complete already: not pulled
    manifests = [r for r in room.mirror.requests if "/manifests/" in r.path]
    assert [r.status for r in manifests] == [200, 200]  # one pull per guest, qwen not asked


def test_direct_pulls_a_corrupt_blob_again(room: SeededRoom) -> None:
    """``ollama pull`` would keep the corrupt file: gpulab deletes it, then pulls."""
    blob = room.corrupt("lab-02", room.pulled.model_digest)
    result = room.deploy("direct corrupt blob", "models.py", **_direct(room))
    assert result.rc == 0, result.describe()
    assert result.changed_hosts == ["lab-02"], result.describe()
    assert room.sh("lab-02", f"sha256sum {blob}").split()[0] == blob[-64:]
    assert room.listed("lab-02")[PULLED] == room.pulled.digest


def test_direct_rerun_changes_nothing(room: SeededRoom) -> None:
    assert_unchanged(room.deploy("direct rerun", "models.py", **_direct(room)), GUESTS)


def test_an_unknown_model_fails_each_host_with_the_registrys_error(room: SeededRoom) -> None:
    result = room.deploy("direct unknown", "models.py", **_direct(room, "nosuch:1b"))
    # every host failed, so pyinfra stops ("No hosts remaining!") before printing its JSON:
    # each host's failure is read from its error line in the output
    assert result.rc != 0, result.describe()
    for name in GUESTS:
        assert (f"[{name}] {room.mirror.guest_url}/library/nosuch:1b: Ollama refused the pull: "
                "pull model manifest: file does not exist (404)") in result.output, \
            result.describe()


def test_gpulab_verify_finds_the_room_ready(room: SeededRoom) -> None:
    # the inventory of the last deploy that succeeded: what the hosts were given
    assert_ready(verify(room.inventory("direct rerun"), label="models room"), GUESTS)
