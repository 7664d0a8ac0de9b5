"""The room the model benches share: four guests on a room network (``<prefix>-01`` the room
cache, ``-02..04`` hosts), a model of the stand-in registry fetched once into the instructor's
store, the cache set up with ``deploy/room_cache.py`` and the stand-in Ollama on the hosts (not
timed). Needs root and QEMU. A bench puts the repository on ``sys.path`` before importing it."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gpulab.lab.fleet import Fleet
from gpulab.lab.image import ensure_image
from gpulab.models.names import parse_model_name
from gpulab.models.registry import RegistryClient
from gpulab.models.store import Store
from tests.fixtures.http_server import StaticServer
from tests.fixtures.ollama_registry import PublishedModel, RegistryStandIn
from tests.fixtures.ollama_release import build_release
from tests.fleet import FleetUnderTest, free_udp_port, inventory_with, join_room
from tests.pyinfra_run import PyinfraResult, run_pyinfra

REPO = Path(__file__).resolve().parents[1]

VERSION = "0.33.0"
MODEL = "qwen2.5:7b"
MODELS = "/usr/share/ollama/.ollama/models"
CACHE_ADDRESS = "10.77.0.1"


def must(result: PyinfraResult, what: str) -> PyinfraResult:
    """``result``, or the bench ends with its description when the run failed."""
    if result.rc != 0:
        print(f"{what} failed:\n{result.describe()}", file=sys.stderr)
        raise SystemExit(1)
    return result


@dataclass
class Room:
    fleet: Fleet
    tmp: Path
    registry: RegistryStandIn
    model: PublishedModel
    data: dict[str, object]
    releases_url: str
    cache: str
    hosts: tuple[str, ...]

    def inventory(self, label: str, data: Mapping[str, object]) -> Path:
        """The fleet's inventory with the room's data and ``data`` (written as ``label``)."""
        return inventory_with(self.fleet, {**self.data, **data}, self.tmp / f"{label}.py")

    def deploy(self, inventory: Path, deploy: str, names: tuple[str, ...] | list[str],
               what: str) -> PyinfraResult:
        """``pyinfra INVENTORY deploy/<deploy> --limit …`` over ``names``; ends the bench
        when it fails."""
        limits = [arg for name in names for arg in ("--limit", name)]
        return must(run_pyinfra(inventory, REPO / "deploy" / deploy, extra_args=limits,
                                cwd=REPO), what)

    def empty_hosts(self) -> None:
        """Every host's Ollama store emptied (and a swarm's staging left by a run)."""
        for name in self.hosts:
            self.fleet.ssh(name, f"rm -rf {MODELS}/blobs {MODELS}/manifests "
                           f"{MODELS}/.gpulab-verified {MODELS}/.gpulab-swarm")


@contextmanager
def bench_room(prefix: str, payload_mb: int, data: Mapping[str, object]) -> Iterator[Room]:
    """The room set up with ``data`` (the inventory's data for every guest, ``room_cidrs`` and
    the model's keys added): the cache's deploy run (``room_cache`` set), Ollama on the hosts
    from the cache."""
    image = ensure_image(log=lambda _: None)
    with tempfile.TemporaryDirectory(prefix=f"gpulab-bench-{prefix}-") as tmp_text:
        tmp = Path(tmp_text)
        with StaticServer(tmp / "www") as releases, \
                RegistryStandIn(tmp / "registry") as registry, \
                FleetUnderTest(tmp / "fleet", hosts=4, prefix=prefix, image=image,
                               room_port=free_udp_port(), log=lambda _: None) as fleet:
            build_release(releases.root, VERSION)
            model = registry.publish(MODEL, payload_bytes=payload_mb << 20)
            store = tmp / "store"
            RegistryClient().fetch(Store(store), parse_model_name(MODEL), registry.url)
            fleet.up()
            for name in fleet.guests:
                join_room(fleet, name)
            names = sorted(fleet.guests)
            room = Room(fleet, tmp, registry, model, {
                "room_cidrs": ["10.77.0.0/24"], "ollama_version": VERSION,
                "room_cache_nvidia_distros": [], "models": [MODEL], "models_store": str(store),
                **data}, releases.guest_url, names[0], tuple(names[1:]))
            cache = room.inventory("cache", {"room_cache": CACHE_ADDRESS,
                                             "ollama_download_base": releases.guest_url})
            room.deploy(cache, "room_cache.py", [room.cache], "the cache set-up (not timed)")
            room.deploy(room.inventory("ollama", {"room_cache": CACHE_ADDRESS}), "ollama.py",
                        room.hosts, "Ollama on the hosts (not timed)")
            print(f"store: {model.total_size / 1e6:.0f} MB in {len(model.blobs)} blobs; "
                  f"accel: {fleet.accel.name}; cache set up", flush=True)
            yield room
