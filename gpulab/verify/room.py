"""The room file: what every pytest process needs to know of the inventory, as JSON.

pyinfra's inventory loader (``pyinfra_cli``) monkey-patches the process for gevent, which
breaks pytest-xdist's threads; so the inventory is read once, in a child process
(``python -m gpulab.verify.room``), and the pytest processes read the file it writes: the
hosts asked for, how testinfra reaches each, every host's validated settings, and the
``ssh_config`` written from the pyinfra SSH data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from gpulab.settings import Settings
from gpulab.verify.connection import ConnectionDataError, Target, ssh_config_block, target_for

USAGE_ERROR = 2


@dataclasses.dataclass(frozen=True)
class RoomFile:
    """The hosts to verify and everything needed to reach and plan them."""

    hosts: list[str]
    targets: dict[str, Target]
    problems: dict[str, str]  # host -> why testinfra cannot connect to it at all
    settings: dict[str, Settings]
    ssh_config: Path

    def dump(self) -> str:
        return json.dumps({
            "hosts": self.hosts,
            "targets": {name: dataclasses.asdict(t) for name, t in self.targets.items()},
            "problems": self.problems,
            "settings": {name: s.model_dump(mode="json") for name, s in self.settings.items()},
            "ssh_config": str(self.ssh_config),
        })

    @classmethod
    def load(cls, path: Path) -> RoomFile:
        raw: dict[str, Any] = json.loads(path.read_text())
        return cls(
            hosts=list(raw["hosts"]),
            targets={name: Target(**t) for name, t in raw["targets"].items()},
            problems=dict(raw["problems"]),
            settings={name: Settings.model_validate(s) for name, s in raw["settings"].items()},
            ssh_config=Path(raw["ssh_config"]),
        )


def read_inventory(inventory: str, limit: list[str] | None, workdir: Path) -> RoomFile:
    """Load the pyinfra inventory, validate every host's settings, write the ssh_config."""
    from gpulab.deploys.context import RECORDED_FACTS_KEY, STAND_IN_FACTS_KEY
    from gpulab.inventory import host_data, load_state
    from gpulab.settings import parse_inventory_settings

    everyone = host_data(load_state(inventory, limit))
    settings = parse_inventory_settings(everyone)
    data = dict(everyone)
    names = list(limit) if limit else [name for name, _ in everyone]
    targets, problems, blocks = {}, {}, []
    for name in names:
        try:
            key = STAND_IN_FACTS_KEY if data[name].get(STAND_IN_FACTS_KEY) else RECORDED_FACTS_KEY
            targets[name] = target_for(name, data[name], key)
            if targets[name].hostspec.startswith("ssh://"):
                blocks.append(ssh_config_block(name, data[name], workdir))
        except ConnectionDataError as error:
            problems[name] = str(error)
    ssh_config = workdir / "ssh_config"
    ssh_config.write_text("\n".join(blocks))
    return RoomFile(names, targets, problems, {n: settings[n] for n in names}, ssh_config)


def write_room_file(inventory: str, limit: list[str] | None, workdir: Path) -> Path:
    """Run the inventory reader in a child process; ValueError with its message if it fails."""
    out = workdir / "room.json"
    command = [sys.executable, "-m", "gpulab.verify.room", inventory, "--out", str(out)]
    for name in limit or []:
        command += ["--limit", name]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ValueError(done.stderr.strip() or f"reading {inventory} failed")
    return out


def main(argv: list[str] | None = None) -> int:
    from gpulab.inventory import InventoryError
    from gpulab.settings import SettingsError

    parser = argparse.ArgumentParser(prog="python -m gpulab.verify.room")
    parser.add_argument("inventory")
    parser.add_argument("--limit", action="append")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        room = read_inventory(args.inventory, args.limit, out.parent)
    except (InventoryError, SettingsError) as error:
        print(error, file=sys.stderr)
        return USAGE_ERROR
    out.write_text(room.dump())
    return 0


if __name__ == "__main__":
    sys.exit(main())
