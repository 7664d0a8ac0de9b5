"""The models swarm on a room network of four guests: the room cache seeds, three hosts share.

``swarm-01`` is the room cache (the real deploy: nginx, mktorrent's torrent with the web seed);
``swarm-02``..``04`` get Ollama (the stand-in release) and then the course model by
``models_distribution: swarm`` in one pyinfra run over all four: aria2 from Debian's archive on
every guest, peers meeting by Local Peer Discovery on ``10.77.0.0/24`` (a QEMU socket netdev on
this machine's loopback). Each guest's room link is throttled (``tc``) so the transfer lasts
long enough to kill a host in the middle of it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpulab.models.names import parse_model_name
from gpulab.models.registry import RegistryClient
from gpulab.models.store import Store
from tests.fixtures.http_server import StaticServer
from tests.fixtures.ollama_registry import RegistryStandIn
from tests.fixtures.ollama_release import build_release
from tests.fleet import (
    FleetUnderTest,
    free_udp_port,
    inventory_with,
    join_room,
    throttle_room_link,
)
from tests.integration.conftest import require_guests
from tests.integration.outcomes import assert_unchanged
from tests.phases import record_phase, timed
from tests.pyinfra_run import PyinfraResult, run_pyinfra

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.33.0"
CACHE, HOSTS = "swarm-01", ("swarm-02", "swarm-03", "swarm-04")
MODELS = "/usr/share/ollama/.ollama/models"
PAYLOAD = 24 << 20
# Each guest's room egress: the 24 MiB model takes ~5 s per copy from one sender.
RATE = "40mbit"


@dataclass
class Room:
    fleet: FleetUnderTest
    tmp: Path
    data: dict[str, Any]

    def sh(self, name: str, command: str, check: bool = True) -> str:
        rc, output = self.fleet.ssh(name, command, timeout=120)
        if check and rc != 0:
            raise AssertionError(f"{name}: {command!r}: exit {rc}\n{output}")
        return output.strip()

    def deploy(self, label: str, deploy: str, limit: tuple[str, ...]) -> PyinfraResult:
        inventory = inventory_with(self.fleet, self.data,
                                   self.tmp / f"inventory-{label.replace(' ', '-')}.py")
        args: list[str] = [str(REPO / "deploy" / deploy)]
        for name in limit:
            args += ["--limit", name]
        result = run_pyinfra(inventory, *args, cwd=REPO, timeout=900)
        record_phase(f"swarm: {label} (rc {result.rc})", result.seconds)
        return result

    def leftovers(self, name: str) -> str:
        """aria2 processes, the swarm's table or a listener on its port, if any remain."""
        return self.sh(name, "pgrep -a aria2c; nft list table inet gpulab_swarm 2>/dev/null "
                       "| head -1; ss -Hltn 'sport = :6881'; true")

    def tags(self, name: str) -> set[str]:
        tags = json.loads(self.sh(name, "curl -fsS http://127.0.0.1:11434/api/tags"))
        return {m["name"] for m in tags["models"]}

    def forget_model(self, name: str) -> None:
        self.sh(name, f"rm -rf {MODELS}/blobs/* {MODELS}/manifests/* {MODELS}/.gpulab-verified")


@pytest.fixture(scope="module")
def room(lab_image: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    require_guests()
    tmp = tmp_path_factory.mktemp("swarm")
    fleet = FleetUnderTest(tmp / "fleet", hosts=4, prefix="swarm", memory_mib=1024,
                           image=lab_image, room_port=free_udp_port(),
                           log=lambda m: print(m, flush=True))
    with StaticServer(tmp / "www") as releases, RegistryStandIn(tmp / "registry") as registry, \
            fleet:
        build_release(releases.root, VERSION)
        registry.publish("qwen2.5:7b", payload_bytes=PAYLOAD)
        store = tmp / "store"
        RegistryClient().fetch(Store(store), parse_model_name("qwen2.5:7b"), registry.url)
        with timed("swarm: boot 4 guests with a room network"):
            fleet.up()
            for name in fleet.guests:
                join_room(fleet, name)
                throttle_room_link(fleet, name, RATE)
        data = {
            "room_cache": "10.77.0.1", "room_cidrs": ["10.77.0.0/24"],
            "room_cache_nvidia_distros": [], "ollama_version": VERSION,
            "models": ["qwen2.5:7b"], "models_distribution": "swarm",
            "models_store": str(store),
        }
        room = Room(fleet, tmp, data)
        with timed("swarm: the cache (apt, nginx, torrent) and Ollama on 3 hosts"):
            # The cache fetches the Ollama release from the stand-in; hosts from the cache.
            room.data["ollama_download_base"] = releases.guest_url
            cache = room.deploy("cache set-up", "room_cache.py", (CACHE,))
            assert cache.rc == 0, cache.describe()
            del room.data["ollama_download_base"]
            hosts = room.deploy("Ollama on the hosts", "ollama.py", HOSTS)
            assert hosts.rc == 0, hosts.describe()
        yield room


def test_the_model_reaches_every_host_complete_and_checked(room: Room) -> None:
    result = room.deploy("swarm to 3 hosts", "models.py", (CACHE, *HOSTS))
    assert result.rc == 0, result.describe()
    for name in HOSTS:
        assert room.tags(name) == {"qwen2.5:7b"}
        owners = room.sh(name, f"stat -c %U {MODELS}/blobs/* | sort -u")
        assert owners == "ollama", owners
        assert room.sh(name, f"test ! -e {MODELS}/.gpulab-swarm && echo gone") == "gone"
    for name in (CACHE, *HOSTS):
        assert room.leftovers(name) == "", f"{name}: {room.leftovers(name)}"
    # Peers served each other: the cache's nginx (web seed) did not send every host a copy.
    log = room.sh(CACHE, "cat /var/log/nginx/access.log")
    print(f"web seed requests: {log.count('/models/blobs/')}")


def test_a_rerun_moves_nothing_and_starts_nothing(room: Room) -> None:
    result = room.deploy("swarm rerun", "models.py", (CACHE, *HOSTS))
    assert_unchanged(result, (CACHE, *HOSTS))
    for name in (CACHE, *HOSTS):
        assert room.leftovers(name) == "", name


def test_a_host_killed_mid_transfer_fails_alone(room: Room) -> None:
    victim, survivor = HOSTS[0], HOSTS[1]
    for name in (victim, survivor):
        room.forget_model(name)
    outcome: list[PyinfraResult] = []
    run = threading.Thread(target=lambda: outcome.append(
        room.deploy("swarm with a host killed", "models.py", (CACHE, *HOSTS))))
    run.start()
    staged = f"{MODELS}/.gpulab-swarm/blobs"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        rc, size = room.fleet.ssh(victim, f"du -sb {staged} 2>/dev/null | cut -f1", timeout=30)
        if rc == 0 and size.strip().isdigit() and int(size) > 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the victim never started downloading")
    room.fleet.kill(victim)
    run.join(timeout=900)
    (result,) = outcome
    assert result.rc != 0 and victim in result.failed_hosts, result.describe()
    assert [h for h in result.failed_hosts if h != victim] == [], result.describe()
    assert room.tags(survivor) == {"qwen2.5:7b"}
    for name in (CACHE, survivor, HOSTS[2]):
        assert room.leftovers(name) == "", f"{name}: {room.leftovers(name)}"
