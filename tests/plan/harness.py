"""Run the real deploy code against recorded facts, without touching a host.

Hosts are pyinfra ``@fake`` hosts (no command reaches anything); gpulab's own facts come
from a recorded ``gpulab facts`` file through the ``gpulab_recorded_facts`` data key, and
pyinfra's operation facts (packages, files) see an empty host. What comes back is each
operation pyinfra planned, with the exact shell commands it would run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyinfra.api.command import FileUploadCommand
from pyinfra.api.config import Config
from pyinfra.api.connect import connect_all
from pyinfra.api.inventory import Inventory
from pyinfra.api.state import State, StateStage
from pyinfra.context import ctx_config, ctx_host, ctx_inventory, ctx_state

from gpulab.deploys.context import RECORDED_FACTS_KEY

FACTS_DIR = Path(__file__).parent / "facts"


@dataclass(frozen=True)
class PlannedOp:
    """One operation as pyinfra planned it for one host."""

    name: str
    commands: tuple[str, ...]

    @property
    def text(self) -> str:
        """All commands joined, for substring assertions."""
        return "\n".join(self.commands)


@dataclass(frozen=True)
class PlannedHost:
    """Every operation planned for a host, in order."""

    ops: tuple[PlannedOp, ...]

    def op(self, name: str) -> PlannedOp:
        """The operation whose name contains ``name``."""
        found = [op for op in self.ops if name in op.name]
        assert found, f"no operation named like {name!r}; have {[op.name for op in self.ops]}"
        return found[0]

    def names(self) -> list[str]:
        """The operations' names, in order."""
        return [op.name for op in self.ops]

    @property
    def text(self) -> str:
        """Every command of every operation, for substring assertions."""
        return "\n".join(op.text for op in self.ops)


def _describe(command: object) -> str:
    """A command as text; an upload as ``upload <dest>`` followed by the uploaded text."""
    if isinstance(command, FileUploadCommand):
        source = command.src
        if isinstance(source, str):
            content = Path(source).read_bytes().decode(errors="replace")  # blobs are binary
        else:
            source.seek(0)
            content = source.read()
            content = content.decode() if isinstance(content, bytes) else content
        return f"upload {command.dest}\n{content}"
    return str(command)


def plan_deploy(
    deploy: Callable[[], None],
    facts_file: str,
    data: Mapping[str, Any] | None = None,
    fake_responses: Mapping[Any, Any] | None = None,
) -> PlannedHost:
    """Prepare ``deploy`` for one ``@fake`` host whose gpulab facts are ``facts_file``."""
    host_data = {
        RECORDED_FACTS_KEY: str(FACTS_DIR / facts_file),
        "fake_delay": 0,
        "fake_delay_jitter": 0,
        "fake_responses": dict(fake_responses or {}),
        **(data or {}),
    }
    name = "@fake/" + facts_file.removesuffix(".json")
    inventory = Inventory(([(name, host_data)], {}))
    config = Config()
    state = State(inventory, config)
    ctx_state.set(state)
    ctx_inventory.set(inventory)
    ctx_config.set(config)
    state.set_stage(StateStage.Connect)
    connect_all(state)
    state.set_stage(StateStage.Prepare)
    host = inventory.get_host(name)
    ops = []
    with ctx_host.use(host):
        deploy()
        for op_hash in state.get_op_order():
            op_data = state.get_op_data_for_host(host, op_hash)
            commands = tuple(_describe(command) for command in op_data.command_generator())
            ops.append(PlannedOp(", ".join(state.get_op_meta(op_hash).names), commands))
    return PlannedHost(tuple(ops))
