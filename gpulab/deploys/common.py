"""Small pieces every deploy uses: templates, a message-only operation, change tests, refusal."""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from importlib.resources import files
from typing import Any, ParamSpec

from paramiko import SSHException
from pyinfra import logger
from pyinfra.api.arguments_typed import PyinfraOperation
from pyinfra.api.command import FunctionCommand
from pyinfra.api.deploy import deploy
from pyinfra.api.exceptions import ConnectError
from pyinfra.api.operation import OperationMeta, operation
from pyinfra.context import ctx_host, host
from pyinfra.facts.deb import DebPackages

P = ParamSpec("P")

# What a host that powers off or drops off the network raises while pyinfra prepares it:
# paramiko's EOFError and SSHException, socket errors (OSError, TimeoutError), ConnectError.
LOST_CONNECTION = (EOFError, OSError, SSHException, ConnectError)

# gpulab/templates is a link to the repository's templates/; the wheel carries the files.
TEMPLATES = files("gpulab") / "templates"


def gpulab_deploy(name: str) -> Callable[[Callable[P, None]], PyinfraOperation[P]]:
    """pyinfra's ``@deploy(name)``, where a host whose connection dies fails alone.

    pyinfra prepares every host's operations in parallel and ends the whole run on the first
    exception from any host (``pyinfra_cli.util._parallel_load_hosts``); a student's PC that
    powers off while gpulab gathers its facts must instead be marked failed and named, and
    the other hosts go on. A host already failed in this run is skipped by later deploys.

    .. code:: python

        @gpulab_deploy("gpulab Ollama")
        def ollama() -> None: ...
    """

    def wrap(func: Callable[P, None]) -> PyinfraOperation[P]:
        @functools.wraps(func)
        def survive(*args: P.args, **kwargs: P.kwargs) -> None:
            this = ctx_host.get()  # the Host itself: pyinfra's sets of hosts hold those
            if this in this.state.failed_hosts:
                return
            try:
                func(*args, **kwargs)
            except LOST_CONNECTION as error:
                logger.error(f"{host.print_prefix}connection lost while gpulab prepared {name}"
                             f" ({type(error).__name__}: {error}); this host is marked failed,"
                             " the others go on. Check that it is on and reachable, then run"
                             " gpulab again for it (--limit)")
                this.state.fail_hosts({this})

        return deploy(name)(survive)

    return wrap


def template(name: str) -> str:
    """The path of a template shipped with gpulab, e.g. ``template("apt/gpulab-lock.conf.j2")``."""
    return str(TEMPLATES / name)


@operation()
def say(message: str) -> Generator[str]:
    """Do nothing on the host; tell the user why (``host.noop``).

    .. code:: python

        say(name="CUDA toolkit: none", message="cuda_toolkit is none")
    """
    host.noop(message)
    yield from ()


def changed(*ops: OperationMeta) -> Callable[[], bool]:
    """An ``_if`` condition: did any of ``ops`` change the host in this run.

    .. code:: python

        systemd.service(..., restarted=True, _if=changed(unit_op, dropin_op))
    """
    return lambda: any(op.did_change() for op in ops)


def will_change(op: OperationMeta) -> bool:
    """Whether ``op`` changed the host, or (before it ran, in pyinfra's preview) will."""
    return op.did_change() if op.is_complete() else op.will_change


def missing_packages(packages: tuple[str, ...] | list[str]) -> list[str]:
    """Which of ``packages`` dpkg does not have installed right now."""
    installed: dict[str, list[str]] = host.get_fact(DebPackages)
    return [name for name in packages if name not in installed]


@operation(is_idempotent=False)
def refused(reason: str) -> Generator[FunctionCommand]:
    """Fail this host with ``reason`` before anything changes on it.

    .. code:: python

        refused(name="Ollama: firewalld is active", reason="...")
    """
    # pyinfra hands state and host to a callback only under exactly these names; otherwise it
    # calls it with no arguments, which raises instead of saying the reason
    def fail(state: Any, host: Any) -> bool:
        logger.error(f"{host.print_prefix}{reason}")
        return False

    yield FunctionCommand(fail, (), {})
