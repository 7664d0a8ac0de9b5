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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.room import CACHE_ADDRESS, bench_room


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--payload-mb", type=int, default=200, help="the model's size (MB)")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args()
    times: dict[str, dict[int, float]] = {"cache": {}, "ssh": {}}
    with bench_room("room", args.payload_mb, {"models_distribution": "seeded"}) as room:
        routes = {
            "cache": room.inventory("via-cache", {"room_cache": CACHE_ADDRESS}),
            "ssh": room.inventory("via-ssh", {"ollama_download_base": room.releases_url}),
        }
        for count in (1, 2, 3):
            for route, inventory in routes.items():
                room.empty_hosts()
                result = room.deploy(inventory, "models.py", room.hosts[:count],
                                     f"models to {count} via {route}")
                times[route][count] = result.seconds
                print(f"models to {count} host(s) via {route}: {result.seconds:.1f} s",
                      flush=True)
        served = room.registry.blob_bytes_served()
        size = room.model.total_size

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
