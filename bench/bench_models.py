"""Benchmark seeded course models: the room's one copy, sent to 3 guests, vs plain rsync.

    .venv/bin/python bench/bench_models.py [--payload-mb 300] [--json]

Publishes a model of about ``--payload-mb`` MB (a real GGUF) on the stand-in registry
(tests/fixtures/ollama_registry.py), fetches it once with ``gpulab models fetch``, installs the
stand-in Ollama on 3 guests, then times, side by side on the same guests:

* ``pyinfra INVENTORY deploy/models.py`` (seeded: the blobs sent by rsync, each sha256-checked
  on the host, owned by ``ollama``, renamed into place, then listed by the host's Ollama), and
* ``rsync -a`` of the same store to the same guests, 3 at once.

Prints the ratio of the two (goal: at most 1.3) and the registry's blob bytes served for the
3 hosts divided by one copy of the model (must be exactly 1). Needs root and QEMU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpulab.lab.fleet import Fleet  # noqa: E402
from gpulab.lab.image import ensure_image  # noqa: E402
from tests.fixtures.http_server import StaticServer  # noqa: E402
from tests.fixtures.ollama_registry import RegistryStandIn  # noqa: E402
from tests.fixtures.ollama_release import build_release  # noqa: E402
from tests.fleet import inventory_with  # noqa: E402
from tests.pyinfra_run import PyinfraResult, run_pyinfra  # noqa: E402

VERSION = "0.33.0"  # a stand-in release: its sha256sum.txt verifies it
MODEL = "qwen2.5:7b"
RSYNC_DEST = "/var/tmp/rsync-store/"


def _quiet(_: str) -> None:
    pass


def _must(result: PyinfraResult, what: str) -> PyinfraResult:
    if result.rc != 0:
        print(f"{what} failed:\n{result.describe()}", file=sys.stderr)
        raise SystemExit(1)
    return result


def _rsync_all(fleet: Fleet, store: Path) -> float:
    """``rsync -a`` of the store to every guest at once; the wall time."""
    started = time.monotonic()
    procs = [subprocess.Popen(["rsync", "-a", "-e", f"ssh -F {fleet.ssh_config}",
                               f"{store}/", f"{name}:{RSYNC_DEST}"])
             for name in fleet.guests]
    if any(proc.wait() != 0 for proc in procs):
        raise SystemExit("rsync failed")
    return time.monotonic() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--payload-mb", type=int, default=300, help="the model's size (MB)")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args()
    image = ensure_image(log=_quiet)

    with tempfile.TemporaryDirectory(prefix="gpulab-bench-models-") as tmp_text:
        tmp = Path(tmp_text)
        with StaticServer(tmp / "www") as releases, \
                RegistryStandIn(tmp / "registry") as registry, \
                Fleet(tmp / "fleet", hosts=3, image=image, log=_quiet) as fleet:
            build_release(releases.root, VERSION)
            model = registry.publish(MODEL, payload_bytes=args.payload_mb << 20)
            store = tmp / "store"
            fetch = subprocess.run([sys.executable, "-m", "gpulab.cli", "models", "fetch",
                                    MODEL, "--store", str(store), "--registry", registry.url],
                                   capture_output=True, text=True, cwd=REPO, check=False)
            if fetch.returncode != 0:
                print(fetch.stdout + fetch.stderr, file=sys.stderr)
                return 1
            print(f"store: {model.total_size / 1e6:.0f} MB in {len(model.blobs)} blobs; "
                  f"accel: {fleet.accel.name}")
            fleet.up()
            inventory = inventory_with(fleet, {
                "ollama_download_base": releases.guest_url, "ollama_version": VERSION,
                "models": [MODEL], "models_distribution": "seeded",
                "models_store": str(store)}, tmp / "inventory.py")
            _must(run_pyinfra(inventory, REPO / "deploy" / "ollama.py", cwd=REPO),
                  "the Ollama deploy (set-up, not timed)")

            seeded = _must(run_pyinfra(inventory, REPO / "deploy" / "models.py", cwd=REPO),
                           "the seeded models deploy")
            rsync_s = _rsync_all(fleet, store)
            rerun = _must(run_pyinfra(inventory, REPO / "deploy" / "models.py", cwd=REPO),
                          "the models deploy's rerun")
            if seeded.changed_hosts != sorted(fleet.guests) or rerun.changed_hosts:
                print(seeded.describe() + "\n" + rerun.describe(), file=sys.stderr)
                return 1
            served = registry.blob_bytes_served()

    ratio = seeded.seconds / rsync_s
    served_ratio = served / model.total_size
    print(f"seeded deploy to 3 guests / rsync of the same store to them: "
          f"{seeded.seconds:.1f} / {rsync_s:.1f} s = {ratio:.2f} (goal <= 1.3)")
    print(f"registry blob bytes served for 3 hosts / one copy: {served} / {model.total_size}"
          f" = {served_ratio:.3f} (must be exactly 1)")
    print(f"seeded rerun (no change): {rerun.seconds:.1f} s")
    if args.json:
        print(json.dumps({"payload_bytes": model.total_size, "seeded_s": round(seeded.seconds, 2),
                          "rsync_s": round(rsync_s, 2), "ratio_seeded_to_rsync": round(ratio, 2),
                          "registry_bytes_served": served, "one_copy_bytes": model.total_size,
                          "rerun_s": round(rerun.seconds, 2)}, indent=2))
    return 0 if served == model.total_size else 1


if __name__ == "__main__":
    raise SystemExit(main())
