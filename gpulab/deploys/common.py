"""Small pieces every deploy uses: templates, a message-only operation, change tests."""

from __future__ import annotations

from collections.abc import Callable, Generator
from importlib.resources import files

from pyinfra.api.operation import OperationMeta, operation
from pyinfra.context import host
from pyinfra.facts.deb import DebPackages

# gpulab/templates is a link to the repository's templates/; the wheel carries the files.
TEMPLATES = files("gpulab") / "templates"


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
