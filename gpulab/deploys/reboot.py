"""Reboot a host after its driver changed, only where the data allows it, in batches.

Rules, in order: never WSL2 (the user runs ``wsl --shutdown`` in Windows), never the machine
pyinfra runs on (``@local``) nor a ``@chroot``, only when this run's driver operations changed
something or the host says a reboot is required, and only with ``reboot_allowed: true``.
Batches: the reboot operation runs with pyinfra's ``_parallel`` set to the inventory's
``reboot_batch`` (pyinfra 3.10 requires one value for every host of an operation, so the
smallest of all hosts' values is used); ``pyinfra --serial`` still reboots one host at a time.

After the reboot, when the host's PCI bus shows an NVIDIA GPU, ``nvidia-smi`` must exit 0;
otherwise the host fails with the reason (Secure Boot, nouveau, missing headers/DKMS build).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pyinfra import logger
from pyinfra.api.command import FunctionCommand
from pyinfra.api.deploy import deploy
from pyinfra.api.operation import OperationMeta, operation
from pyinfra.context import host
from pyinfra.facts.server import RebootRequired
from pyinfra.operations import server

from gpulab.deploys.context import host_plan, host_settings
from gpulab.deploys.cuda import say
from gpulab.deploys.nvidia import driver_ops
from gpulab.facts import NvidiaPciDevices
from gpulab.nvidia import check_script, diagnose, parse_check

# Connectors that are not a machine gpulab may restart.
NEVER_REBOOTED = {"local": "@local is the machine pyinfra runs on",
                  "chroot": "@chroot is a directory, not a machine"}


def connector_refusal(connector_cls: type) -> str | None:
    """Why this connector's host is never rebooted, or None.

    >>> from pyinfra.connectors.local import LocalConnector
    >>> connector_refusal(LocalConnector)
    '@local is the machine pyinfra runs on'
    """
    name = connector_cls.__name__.lower().removesuffix("connector")
    return NEVER_REBOOTED.get(name)


def _changed(op: OperationMeta) -> bool:
    # Before execution (pyinfra's change detection pass) only the prediction exists.
    return op.did_change() if op.is_complete() else op.will_change


def check_driver_loads(state: Any, host: Any, dkms_expected: bool) -> bool:
    """After the reboot: ``nvidia-smi`` must work when a GPU is on the PCI bus.

    Logs one clear reason and returns False (pyinfra fails the host) when it does not.
    """
    gpus = host.get_fact(NvidiaPciDevices)
    if not gpus:
        host.log_styled("no NVIDIA GPU on the PCI bus: nvidia-smi not checked",
                        log_func=logger.info)
        return True
    _status, output = host.run_shell_command(check_script())
    check = parse_check("\n".join(output.stdout_lines))
    problem = diagnose(check, dkms_expected)
    if problem is None:
        host.log_styled(f"driver loads: {check.smi_output}", log_func=logger.info)
        return True
    host.log_styled(f"the NVIDIA driver does not load after the reboot: {problem}",
                    fg="red", log_func=logger.error)
    return False


@operation(is_idempotent=False)
def reboot_for_driver(delay: int = 10, reboot_timeout: int = 600) -> Generator[Any]:
    """Reboot when this run changed the driver or the host requires it, then check the driver.

    .. code:: python

        reboot_for_driver(name="reboot for the driver", _parallel=5)
    """
    plan = host_plan(host)
    driver_changed = any(_changed(op) for op in driver_ops(host))
    required = bool(host.get_fact(RebootRequired))
    if not (driver_changed or required):
        host.noop("no reboot needed: the driver did not change and none is required")
        return
    why = "the driver changed" if driver_changed else "the host requires a reboot"
    if not plan.reboot.allowed:
        host.noop(f"{why}, but reboot_allowed is false: reboot this host yourself")
        logger.warning(f"{host.print_prefix}{why}: reboot it yourself (or set reboot_allowed)")
        return
    yield from server.reboot._inner(delay=delay, reboot_timeout=reboot_timeout)
    if plan.driver.source is not None:
        yield FunctionCommand(check_driver_loads, (), {"dkms_expected": plan.driver.dkms})


@deploy("reboot if needed")
def reboot_if_needed() -> None:
    """Apply the reboot policy (see the module) to this host."""
    plan = host_plan(host)
    if plan.platform.startswith("wsl2-"):
        say(name="reboot: never on WSL2", message="WSL2: run `wsl --shutdown` in Windows "
            "when a restart is needed; gpulab never restarts WSL")
        return
    refusal = connector_refusal(host.connector_cls)
    if refusal is not None:
        say(name=f"reboot: never here ({refusal})", message=f"{refusal}; reboot it yourself")
        return
    batch = min(host_settings(other).reboot_batch for other in host.state.inventory)
    reboot_for_driver(name=f"reboot for the driver ({plan.reboot.reason})", _parallel=batch)
