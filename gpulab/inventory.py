"""Loading a pyinfra inventory and connecting to its hosts through pyinfra's own API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyinfra.api.config import Config
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.state import State, StateStage
from pyinfra.context import ctx_config, ctx_inventory, ctx_state
from pyinfra_cli.inventory import make_inventory


class InventoryError(ValueError):
    """An inventory that cannot be loaded or hosts that cannot be reached."""


def load_state(inventory_path: str, limit: list[str] | None = None) -> State:
    """A pyinfra ``State`` for the inventory file, limited to the named hosts if given."""
    if not Path(inventory_path).is_file():
        raise InventoryError(f"{inventory_path}: no such inventory file")
    state = State()
    state.cwd = str(Path.cwd())
    ctx_state.set(state)  # pyinfra reads inventory files in the context of a state
    inventory = make_inventory(inventory_path, cwd=state.cwd)
    ctx_inventory.set(inventory)
    config = Config()
    ctx_config.set(config)
    initial_limit = None
    if limit:
        names = {host.name for host in inventory}
        unknown = sorted(set(limit) - names)
        if unknown:
            raise InventoryError(f"not in {inventory_path}: {', '.join(unknown)}")
        initial_limit = [inventory.get_host(name) for name in limit]
    state.init(inventory, config, initial_limit=initial_limit)
    return state


def host_data(state: State) -> list[tuple[str, dict[str, Any]]]:
    """Every host's merged data (all → groups → host), without connecting."""
    return [(host.name, host.data.dict()) for host in state.inventory]


@contextmanager
def connected(state: State) -> Iterator[list[Any]]:
    """Connect to the (limited) hosts; yields the connected ones and says which failed."""
    state.set_stage(StateStage.Connect)
    connect_all(state)
    try:
        yield [host for host in state.inventory if host in state.activated_hosts]
    finally:
        disconnect_all(state)


def unreachable(state: State) -> list[str]:
    """Hosts that were asked for but could not be connected."""
    return sorted(host.name for host in state.failed_hosts)
