"""``gpulab verify``: runs the suite under pytest (and pytest-xdist) and reports the room.

The inventory and every host's settings are checked here first, so a usage error is exit 2
with its message before any host is contacted. pytest's own output is shown only when it
did not produce a report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from gpulab.verify.report import (
    EXIT_UNREACHABLE,
    Report,
    exit_status,
    render_html,
    render_terminal,
)

MAX_WORKERS = 16  # SSH-bound: hosts are checked concurrently, each on one worker


def pytest_command(inventory: str, limit: list[str] | None, hosts: int, report: Path) -> list[str]:
    """The pytest invocation ``gpulab verify`` runs (what a pytest user would type)."""
    command = [sys.executable, "-m", "pytest", "--pyargs", "gpulab.verify",
               "--inventory", inventory, "--gpulab-report", str(report),
               "-p", "no:cacheprovider", "--noconftest", "-o", "addopts=", "-q", "-rN"]
    for name in limit or []:
        command += ["--limit", name]
    workers = min(hosts, MAX_WORKERS)
    if workers > 1:
        command += ["-n", str(workers), "--dist", "loadgroup"]
    else:
        command += ["-p", "no:xdist"]
    return command


def add_verify_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = commands.add_parser("verify", help="prove each host ready, or say why not")
    verify.add_argument("inventory")
    verify.add_argument("--limit", action="append", help="only this host (repeatable)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--html", metavar="FILE", help="also write a one-page HTML grid")
    verify.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify the room; exit 0 ready, 1 a check failed, 2 usage error or unreachable host."""
    from gpulab.inventory import InventoryError, host_data, load_state
    from gpulab.settings import SettingsError, parse_inventory_settings

    try:
        state = load_state(args.inventory, args.limit)
        parse_inventory_settings(host_data(state))
    except (InventoryError, SettingsError) as error:
        print(f"gpulab verify: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    hosts = len(args.limit) if args.limit else len(host_data(state))
    with tempfile.TemporaryDirectory(prefix="gpulab-verify-") as tmp:
        path = Path(tmp) / "report.json"
        done = subprocess.run(
            pytest_command(str(Path(args.inventory).resolve()), args.limit, hosts, path),
            capture_output=True, text=True, check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if not path.exists():
            print(done.stdout + done.stderr, file=sys.stderr)
            print(f"gpulab verify: the suite did not report (pytest exit {done.returncode})",
                  file=sys.stderr)
            return EXIT_UNREACHABLE
        report: Report = json.loads(path.read_text())
    if args.html:
        Path(args.html).write_text(render_html(report))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from rich.console import Console

        render_terminal(report, Console())
        if args.html:
            print(f"wrote {args.html}")
    return exit_status(report)
