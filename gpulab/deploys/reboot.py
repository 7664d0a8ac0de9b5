"""Reboot a host after its driver changed, only where the data allows it, in batches.

Rules, in order: never WSL2 (the user runs ``wsl --shutdown`` in Windows), never the machine
pyinfra runs on (``@local``) nor a ``@chroot``, only when this run's driver operations changed
something, the host says a reboot is required or the plan found the running module stale (NVML
"Driver/library version mismatch", or no module loaded), and only with ``reboot_allowed: true``.
Batches: the reboot operation runs with pyinfra's ``_parallel`` set to the inventory's
``reboot_batch`` (pyinfra 3.10 requires one value for every host of an operation, so the
smallest of all hosts' values is used); ``pyinfra --serial`` still reboots one host at a time.

After the reboot, when the host's PCI bus shows an NVIDIA GPU, ``nvidia-smi`` must exit 0;
otherwise the host fails with the reason (Secure Boot, nouveau, missing headers/DKMS build).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from pyinfra import logger
from pyinfra.api.operation import operation
from pyinfra.connectors.fake import FakeConnector
from pyinfra.context import host
from pyinfra.facts.server import RebootRequired
from pyinfra.operations import python, server

from gpulab.deploys.common import gpulab_deploy, say, will_change
from gpulab.deploys.context import host_plan, host_run, host_settings
from gpulab.facts.pci import NvidiaPciDevices
from gpulab.plan.driver import check_script, diagnose, parse_check

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


def check_driver_loads(state: Any, host: Any, mok_key: str | None) -> bool:
    """After the reboot: ``nvidia-smi`` must work when a GPU is on the PCI bus.

    ``mok_key``: the DKMS signing certificate (None: the modules are not DKMS-built).

    Logs one clear reason and returns False (pyinfra fails the host) when it does not.
    """
    gpus = host.get_fact(NvidiaPciDevices)
    if not gpus:
        host.log_styled("no NVIDIA GPU on the PCI bus: nvidia-smi not checked",
                        log_func=logger.info)
        return True
    _status, output = host.run_shell_command(check_script())
    check = parse_check("\n".join(output.stdout_lines))
    problem = diagnose(check, mok_key)
    if problem is None:
        host.log_styled(f"driver loads: {check.smi_output}", log_func=logger.info)
        return True
    host.log_styled(f"the NVIDIA driver does not load after the reboot: {problem}",
                    fg="red", log_func=logger.error)
    return False


@operation()
def reboot_left_to_user(needed: Callable[[], bool]) -> Generator[str]:
    """Change nothing; say whether this host needs the reboot that ``reboot_allowed`` forbids.

    .. code:: python

        reboot_left_to_user(name="reboot: left to you", needed=lambda: True)
    """
    if needed():
        host.noop("a reboot is needed, but reboot_allowed is false: reboot this host yourself")
        logger.warning(f"{host.print_prefix}needs a reboot: reboot it yourself "
                       "(or set reboot_allowed)")
    else:
        host.noop("no reboot needed: the driver did not change and none is required")
    yield from ()


@gpulab_deploy("reboot if needed")
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
    run = host_run(host)

    def needed() -> bool:
        # Asked when the operation runs: by then the driver operations have run.
        driver_changed = any(will_change(op) for op in run.driver_ops)
        return driver_changed or plan.reboot.driver_stale or bool(host.get_fact(RebootRequired))

    if not plan.reboot.allowed:
        reboot_left_to_user(name=f"reboot: left to you ({plan.reboot.reason})", needed=needed)
        return
    batch = min(host_settings(other).reboot_batch for other in host.state.inventory)
    # @fake (a dry run) gets the reboot planned and listed as a real host would, never run:
    # pyinfra's wait_and_reconnect cannot reconnect to a host that was never there.
    dry_run = issubclass(host.connector_cls, FakeConnector)
    rebooted = server.reboot(
        name=f"reboot for the driver ({plan.reboot.reason})", delay=10, reboot_timeout=600,
        _parallel=batch, _if=lambda: needed() and not dry_run,
    )
    if plan.driver.source is not None:
        python.call(
            name="the NVIDIA driver loads after the reboot", function=check_driver_loads,
            mok_key=plan.driver.mok_key, _if=rebooted.did_change,
        )
