"""Loading a pyinfra inventory and connecting to its hosts through pyinfra's own API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyinfra.api.config import Config
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.state import BaseStateCallback, State, StateStage
from pyinfra.context import ctx_config, ctx_inventory, ctx_state
from pyinfra_cli.exceptions import UnexpectedExternalError
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
    try:
        inventory = make_inventory(inventory_path, cwd=state.cwd)
    except UnexpectedExternalError as error:  # the inventory file's own code raised
        raise InventoryError(f"{inventory_path}: {error.exception}") from error.exception
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


class _ConnectErrors(BaseStateCallback):
    """Collects why each host could not be connected (pyinfra only logs it)."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def host_connect_error(  # type: ignore[override]  # pyinfra calls it on the instance
        self, state: State, host: Any, error: Exception
    ) -> None:
        self.reasons[host.name] = str(error.args[0]) if error.args else type(error).__name__


@dataclass
class Connected:
    """The hosts that answered, and why each of the others did not."""

    hosts: list[Any]
    unreachable: dict[str, str]


@contextmanager
def connected(state: State) -> Iterator[Connected]:
    """Connect to the (limited) hosts; yields who answered and pyinfra's reason for the rest."""
    errors = _ConnectErrors()
    state.add_callback_handler(errors)
    state.set_stage(StateStage.Connect)
    try:
        connect_all(state)
    except PyinfraError:  # "No hosts remaining!": every host failed, each one is named below
        if not state.failed_hosts:
            raise
    unreachable = {host.name: errors.reasons.get(host.name, "no connection")
                   for host in sorted(state.failed_hosts, key=lambda h: h.name)}
    try:
        yield Connected([host for host in state.inventory if host in state.activated_hosts],
                        unreachable)
    finally:
        disconnect_all(state)
