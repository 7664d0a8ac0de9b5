"""Choose QEMU's accelerator: KVM only where it really boots a stock Debian kernel.

A ``/dev/kvm`` node is not enough. Some cloud machines expose ``kvm_pvm``, a software hypervisor
for specially built guest kernels: a stock kernel aborts (``-cpu host``) or never prints a line.
So KVM needs ``/dev/kvm``, no ``kvm_pvm`` module and a ``vmx``/``svm`` CPU flag; else TCG.
``GPULAB_ACCEL=tcg|kvm`` overrides the choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Accel:
    """The chosen accelerator (``kvm`` or ``tcg``) and why, to print to the user."""

    name: str
    reason: str


def choose_accel(
    kvm_dev: bool,
    kvm_usable: bool,
    modules: set[str],
    cpu_flags: set[str],
    override: str | None = None,
) -> Accel:
    """Pure decision from the observed facts (unit-tested)."""
    if override in ("kvm", "tcg"):
        return Accel(override, "GPULAB_ACCEL")
    if not kvm_dev:
        return Accel("tcg", "no /dev/kvm")
    if not kvm_usable:
        return Accel("tcg", "/dev/kvm is not readable and writable by this user")
    if "kvm_pvm" in modules:
        return Accel("tcg", "kvm_pvm hypervisor cannot boot a stock Debian kernel")
    if not cpu_flags & {"vmx", "svm"}:
        return Accel("tcg", "CPU has no vmx/svm flag")
    return Accel("kvm", "/dev/kvm with hardware virtualization")


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    flags: set[str] = set()
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.partition(":")[2].split())
    except OSError:
        pass
    return flags


def detect_accel() -> Accel:
    """Look at this machine and decide."""
    dev = Path("/dev/kvm")
    try:
        modules = {p.name for p in Path("/sys/module").iterdir()}
    except OSError:
        modules = set()
    return choose_accel(
        kvm_dev=dev.exists(),
        kvm_usable=os.access(dev, os.R_OK | os.W_OK),
        modules=modules,
        cpu_flags=_cpu_flags(),
        override=os.environ.get("GPULAB_ACCEL"),
    )
