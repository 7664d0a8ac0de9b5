"""Benchmark the models swarm: course models to 1, 2 and 3 hosts by ``swarm`` (aria2 among the
hosts, the room cache seeding) vs plain HTTP from the cache (``seeded`` with ``room_cache``).

    .venv/bin/python bench/bench_swarm.py [--payload-mb 100] [--seed-rate 40mbit] [--json]

The room of ``bench/room.py`` (``swarm-01`` the cache, ``-02..04`` hosts); the cache's upload on
the room network throttled to ``--seed-rate`` (``tc`` inside the guest), so the seed's link,
not this machine's CPUs, is what limits. One untimed swarm to the 3 hosts installs aria2
everywhere first. Then, for N = 1, 2, 3 hosts, each host's store emptied first, times
``pyinfra INVENTORY deploy/models.py`` (the cache and N hosts for the swarm, N hosts for HTTP)
and counts the bytes the cache sent on the room network (BitTorrent and HTTP alike).
Prints, per route, seed bytes for 3 hosts ÷ one copy (goal for the swarm ≤ 1.5; HTTP is 3) and
time for 3 ÷ time for 1 (goal ≤ 1.3; HTTP ~3). Needs root and QEMU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.room import CACHE_ADDRESS, bench_room
from tests.fleet import room_bytes_sent, throttle_room_link

ROUTES = {"swarm": "swarm", "http": "seeded"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--payload-mb", type=int, default=100, help="the model's size (MB)")
    ap.add_argument("--seed-rate", default="40mbit", help="the cache's upload (tc rate)")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args()
    times: dict[str, dict[int, float]] = {route: {} for route in ROUTES}
    sent: dict[str, dict[int, int]] = {route: {} for route in ROUTES}
    with bench_room("swarm", args.payload_mb, {"room_cache": CACHE_ADDRESS,
                                              "models_distribution": "swarm"}) as room:
        throttle_room_link(room.fleet, room.cache, args.seed_rate)
        inventories = {route: room.inventory(route, {"models_distribution": distribution})
                       for route, distribution in ROUTES.items()}
        room.deploy(inventories["swarm"], "models.py", [room.cache, *room.hosts],
                    "the swarm to 3 hosts, installing aria2 (not timed)")
        for count in (1, 2, 3):
            for route, inventory in inventories.items():
                room.empty_hosts()
                hosts = list(room.hosts[:count])
                before = room_bytes_sent(room.fleet, room.cache)
                result = room.deploy(inventory, "models.py",
                                     [room.cache, *hosts] if route == "swarm" else hosts,
                                     f"models to {count} via {route}")
                times[route][count] = result.seconds
                sent[route][count] = room_bytes_sent(room.fleet, room.cache) - before
                print(f"models to {count} host(s) via {route}: {result.seconds:.1f} s, "
                      f"the seed sent {sent[route][count] / 1e6:.0f} MB", flush=True)
        size = room.model.total_size

    for route in ROUTES:
        print(f"{route}: 1/2/3 hosts {times[route][1]:.1f} / {times[route][2]:.1f} / "
              f"{times[route][3]:.1f} s; seed bytes for 3 / one copy = "
              f"{sent[route][3] / size:.2f} (swarm goal <= 1.5); time for 3 / time for 1 = "
              f"{times[route][3] / times[route][1]:.2f} (swarm goal <= 1.3)")
    if args.json:
        print(json.dumps({"payload_bytes": size, "seed_rate": args.seed_rate,
                          "times_s": times, "seed_bytes_sent": sent}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
