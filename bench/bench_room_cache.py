"""Benchmark the room cache: course models to 1, 2 and 3 hosts from the cache (HTTP) vs
from the instructor's machine (SSH), and the upstream bytes one room takes.

    .venv/bin/python bench/bench_room_cache.py [--payload-mb 200] [--json]

Boots 4 guests on a room network (``room-01`` the cache, ``room-02..04`` hosts), publishes a
model of ``--payload-mb`` MB on the stand-in registry, fetches it once into the instructor's
store, sets the cache up with ``deploy/room_cache.py`` and the stand-in Ollama on the hosts
(not timed). Then, for N = 1, 2, 3 hosts, each host's store emptied first, times
``pyinfra INVENTORY deploy/models.py`` with ``room_cache`` (every host downloads from the
cache's nginx) and without (every blob sent over SSH from this machine). Prints the times,
the growth per added host, the per-host rate, and the registry's bytes for the room divided
by one copy (must be 1). Needs root and QEMU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpulab.lab.image import ensure_image  # noqa: E402
from gpulab.models.names import parse_model_name  # noqa: E402
from gpulab.models.registry import RegistryClient  # noqa: E402
from gpulab.models.store import Store  # noqa: E402
from tests.fixtures.http_server import StaticServer  # noqa: E402
from tests.fixtures.ollama_registry import RegistryStandIn  # noqa: E402
from tests.fixtures.ollama_release import build_release  # noqa: E402
from tests.fleet import FleetUnderTest, free_udp_port, inventory_with, join_room  # noqa: E402
from tests.pyinfra_run import PyinfraResult, run_pyinfra  # noqa: E402

VERSION = "0.33.0"
MODEL = "qwen2.5:7b"
CACHE, HOSTS = "room-01", ("room-02", "room-03", "room-04")
MODELS = "/usr/share/ollama/.ollama/models"


def _must(result: PyinfraResult, what: str) -> PyinfraResult:
    if result.rc != 0:
        print(f"{what} failed:\n{result.describe()}", file=sys.stderr)
        raise SystemExit(1)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--payload-mb", type=int, default=200, help="the model's size (MB)")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args()
    image = ensure_image(log=lambda _: None)
    times: dict[str, dict[int, float]] = {"cache": {}, "ssh": {}}
    with tempfile.TemporaryDirectory(prefix="gpulab-bench-room-") as tmp_text:
        tmp = Path(tmp_text)
        with StaticServer(tmp / "www") as releases, \
                RegistryStandIn(tmp / "registry") as registry, \
                FleetUnderTest(tmp / "fleet", hosts=4, prefix="room", image=image,
                               room_port=free_udp_port(), log=lambda _: None) as fleet:
            build_release(releases.root, VERSION)
            model = registry.publish(MODEL, payload_bytes=args.payload_mb << 20)
            store = tmp / "store"
            RegistryClient().fetch(Store(store), parse_model_name(MODEL), registry.url)
            fleet.up()
            for name in fleet.guests:
                join_room(fleet, name)
            room = {"room_cidrs": ["10.77.0.0/24"], "ollama_version": VERSION,
                    "room_cache_nvidia_distros": [], "models": [MODEL],
                    "models_distribution": "seeded", "models_store": str(store)}
            cache_inventory = inventory_with(fleet, {
                **room, "ollama_download_base": releases.guest_url}, tmp / "cache.py")
            _must(run_pyinfra(cache_inventory, REPO / "deploy/room_cache.py",
                              extra_args=["--limit", CACHE], cwd=REPO),
                  "the cache set-up (not timed)")
            print(f"store: {model.total_size / 1e6:.0f} MB in {len(model.blobs)} blobs; "
                  f"accel: {fleet.accel.name}; cache set up")
            routes = {
                "cache": inventory_with(fleet, {**room, "room_cache": "10.77.0.1"},
                                        tmp / "via-cache.py"),
                "ssh": inventory_with(fleet, {**room, "ollama_download_base":
                                              releases.guest_url}, tmp / "via-ssh.py"),
            }
            limits = [arg for name in HOSTS for arg in ("--limit", name)]
            _must(run_pyinfra(routes["cache"], REPO / "deploy/ollama.py", extra_args=limits,
                              cwd=REPO),
                  "Ollama on the hosts (not timed)")
            for count in (1, 2, 3):
                for route, inventory in routes.items():
                    for name in HOSTS:
                        fleet.ssh(name, f"rm -rf {MODELS}/blobs {MODELS}/manifests "
                                  f"{MODELS}/.gpulab-verified")
                    hosts = [arg for name in HOSTS[:count] for arg in ("--limit", name)]
                    result = _must(run_pyinfra(inventory, REPO / "deploy/models.py",
                                               extra_args=hosts, cwd=REPO),
                                   f"models to {count} via {route}")
                    times[route][count] = result.seconds
                    print(f"models to {count} host(s) via {route}: {result.seconds:.1f} s",
                          flush=True)
            served = registry.blob_bytes_served()

    size = model.total_size
    for route in ("cache", "ssh"):
        growth = (times[route][3] - times[route][1]) / 2
        print(f"{route}: 1/2/3 hosts {times[route][1]:.1f} / {times[route][2]:.1f} / "
              f"{times[route][3]:.1f} s; +{growth:.1f} s per added host "
              f"(~{size / 1e6 / max(growth, 0.1):.0f} MB/s per added host); "
              f"time for 3 / time for 1 = {times[route][3] / times[route][1]:.2f}")
    print(f"registry bytes for the room / one copy: {served} / {size} = {served / size:.3f} "
          "(must be exactly 1)")
    if args.json:
        print(json.dumps({"payload_bytes": size, "times_s": times,
                          "registry_bytes_served": served}, indent=2))
    return 0 if served == size else 1


if __name__ == "__main__":
    raise SystemExit(main())
