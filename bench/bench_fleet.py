"""Benchmark the test fleet: image cache, boot-to-SSH, and how well 3 guests run side by side.

    .venv/bin/python bench/bench_fleet.py [--json]

Prints the image build time (or a cache hit and the last build's time), boot-to-SSH for one
guest alone and for three booted in parallel, and the ratio of a 3-guest no-op pyinfra run to
a 1-guest one (``--limit``), all measured in this run on this machine. Needs root and QEMU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpulab.lab.fleet import Fleet  # noqa: E402
from gpulab.lab.image import ensure_image  # noqa: E402
from tests.pyinfra_run import run_pyinfra  # noqa: E402

NOOP = ("files.directory", "path=/root")  # exists on every guest: a real op that changes nothing


def _quiet(_: str) -> None:
    pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args()
    out: dict[str, object] = {}

    t0 = time.monotonic()
    image = ensure_image(log=_quiet)
    took = time.monotonic() - t0
    out["image_cache_hit"] = image.cache_hit
    out["image_build_s"] = image.build_seconds
    out["image_ensure_s"] = round(took, 2)
    if image.cache_hit:
        print(f"image: cache hit in {took:.2f} s (last build {image.build_seconds:.0f} s)")
    else:
        print(f"image: built in {image.build_seconds:.0f} s")

    with tempfile.TemporaryDirectory(prefix="gpulab-bench-") as tmp:
        with Fleet(Path(tmp) / "one", hosts=1, image=image, log=_quiet) as one:
            print(f"accel: {one.accel.name} ({one.accel.reason})")
            t0 = time.monotonic()
            one.up()
            single = time.monotonic() - t0
        print(f"boot-to-SSH, 1 guest alone:        {single:6.1f} s")

        with Fleet(Path(tmp) / "three", hosts=3, image=image, log=_quiet) as three:
            t0 = time.monotonic()
            per = three.up()
            parallel = time.monotonic() - t0
            for name, secs in per.items():
                print(f"boot-to-SSH, {name} (3 in parallel): {secs:6.1f} s")
            # warm-up: right after boot the guests are still settling (late units, caches)
            run_pyinfra(three.inventory, *NOOP, cwd=REPO)
            noop1 = run_pyinfra(three.inventory, *NOOP, limit="lab-01", cwd=REPO)
            noop3 = run_pyinfra(three.inventory, *NOOP, cwd=REPO)
            for r in (noop1, noop3):
                if r.rc != 0 or r.changed_hosts:
                    print(r.describe(), file=sys.stderr)
                    return 1

    ratio_boot = parallel / single
    ratio_noop = noop3.seconds / noop1.seconds
    print(f"3 guests in parallel / 1 guest, boot-to-SSH: {parallel:.1f} / {single:.1f} s "
          f"= {ratio_boot:.2f}")
    print(f"3-guest / 1-guest no-op pyinfra run:        {noop3.seconds:.1f} / "
          f"{noop1.seconds:.1f} s = {ratio_noop:.2f}")
    out.update(
        boot_single_s=round(single, 1),
        boot_parallel_s=round(parallel, 1),
        boot_per_guest_s={k: round(v, 1) for k, v in per.items()},
        ratio_boot_3_to_1=round(ratio_boot, 2),
        noop_1_s=round(noop1.seconds, 2),
        noop_3_s=round(noop3.seconds, 2),
        ratio_noop_3_to_1=round(ratio_noop, 2),
    )
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
