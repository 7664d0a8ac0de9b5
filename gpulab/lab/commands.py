"""``gpulab lab up|status|down``: rehearse a lab on local Debian 12 guests.

``up`` leaves daemonized QEMU guests running and writes ``inventory.py`` and ``ssh_config`` to
the state dir (``<repo>/.lab`` or ``$GPULAB_LAB_DIR``), so a user can run
``pyinfra .lab/inventory.py deploy/gpu_host.py`` and ``ssh -F .lab/ssh_config lab-01``.
``box`` makes the same image a Vagrant box (:mod:`gpulab.lab.vagrant`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gpulab.lab.fleet import STATE_FILE, Fleet
from gpulab.lab.vagrant import add_box_parser


def default_state_dir() -> Path:
    """``$GPULAB_LAB_DIR``, else ``.lab`` at the repository root above the cwd, else cwd."""
    env = os.environ.get("GPULAB_LAB_DIR")
    if env:
        return Path(env).expanduser().resolve()
    cwd = Path.cwd().resolve()
    for d in (cwd, *cwd.parents):
        if (d / ".git").exists() or (d / "pyproject.toml").is_file():
            return d / ".lab"
    return cwd / ".lab"


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def cmd_up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    if (state_dir / STATE_FILE).is_file():
        fleet = Fleet.load(state_dir, log=_err)
        if any(g.pid() is not None for g in fleet.guests.values()):
            _err(f"a lab is already running in {state_dir}: `gpulab lab down` first")
            return 1
        fleet.close()
    fleet = Fleet(state_dir, hosts=args.hosts, vcpus=args.vcpus, memory_mib=args.memory,
                  daemonize=True, log=_err)
    fleet.install_cleanup()  # until every guest is up: never leave half a lab behind
    try:
        fleet.up()
    except BaseException:
        fleet.close()
        raise
    fleet.detach()
    print(f"inventory:  {fleet.inventory}")
    print(f"ssh_config: {fleet.ssh_config}   (ssh -F {fleet.ssh_config} lab-01)")
    print("guests reach this machine's 127.0.0.1 services at 10.0.2.2")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    if not (state_dir / STATE_FILE).is_file():
        if args.json:
            print(json.dumps({"guests": [], "inventory": None, "ssh_config": None,
                              "accel": None}))
        else:
            print(f"no lab in {state_dir}")
        return 0
    status = Fleet.load(state_dir, log=_err).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"accel: {status['accel']}  inventory: {status['inventory']}")
    for g in status["guests"]:  # type: ignore[attr-defined]
        print(f"  {g['name']:8} 127.0.0.1:{g['port']:<6} {g['state']}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    if not (state_dir / STATE_FILE).is_file():
        print(f"no lab in {state_dir}")
        return 0
    Fleet.load(state_dir, log=_err).close()
    print("lab stopped")
    return 0


def add_lab_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``lab up|status|down`` on the main CLI's subparsers."""
    lab = subparsers.add_parser("lab", help="local Debian 12 guests to rehearse a lab")
    lab.add_argument("--state-dir", type=Path, default=None,
                     help="where inventory.py, ssh_config and overlays live (default .lab)")
    sub = lab.add_subparsers(dest="lab_command", required=True)
    up = sub.add_parser("up", help="build/reuse the image, boot guests, write inventory")
    up.add_argument("--hosts", type=int, default=2)
    up.add_argument("--vcpus", type=int, default=1)
    up.add_argument("--memory", type=int, default=1024, help="MiB per guest")
    up.set_defaults(func=_with_dir(cmd_up))
    st = sub.add_parser("status", help="guests, ports and readiness")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_with_dir(cmd_status))
    down = sub.add_parser("down", help="power guests off and remove their overlays")
    down.set_defaults(func=_with_dir(cmd_down))
    add_box_parser(sub)


def _with_dir(fn: object) -> object:
    def run(args: argparse.Namespace) -> int:
        if args.state_dir is None:
            args.state_dir = default_state_dir()
        return fn(args)  # type: ignore[operator,no-any-return]

    return run


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m gpulab.lab.commands``) until the main CLI wires it."""
    parser = argparse.ArgumentParser(prog="gpulab")
    add_lab_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
