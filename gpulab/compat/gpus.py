"""GPU families and the driver branches and kernel-module flavours they allow."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from gpulab.compat.tables import BRANCHES, DEVICE_ID_RANGES, FAMILIES, NAME_PATTERNS, Branch, Family

Flavour = Literal["open", "proprietary"]


class GpuRuleError(ValueError):
    """A branch or flavour that cannot drive the host's GPUs."""


def family_by_name(name: str) -> Family:
    """The family with this name (``"Pascal"``)."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(name)


def family_of_pci(device_id: str, lspci_name: str = "") -> Family | None:
    """The family of an NVIDIA PCI device: the chip in lspci's text first, then the device id.

    >>> family_of_pci("2b85", "GB202 [GeForce RTX 5090]").name
    'Blackwell'
    """
    chip = lspci_name.split(" ", 1)[0].upper()
    for family in FAMILIES:
        # Board variants carry letters after the number: GP100GL, TU104GL, GK110BGL.
        if any(re.fullmatch(prefix + r"\d+[A-Z]{0,3}", chip) for prefix in family.chip_prefixes):
            return family
    number = int(device_id, 16)
    for low, high, name in DEVICE_ID_RANGES:
        if low <= number <= high:
            return family_by_name(name)
    return None


def family_of_name(gpu_name: str) -> Family | None:
    """The family of a marketing name as nvidia-smi prints it (``NVIDIA GeForce RTX 3060``)."""
    for pattern, name in NAME_PATTERNS:
        if re.search(pattern, gpu_name, flags=re.IGNORECASE):
            return family_by_name(name)
    return None


def branch(number: int) -> Branch:
    """A branch gpulab knows, or a clear error naming the ones it does."""
    for known in BRANCHES:
        if known.number == number:
            return known
    offered = ", ".join(str(known.number) for known in BRANCHES)
    raise GpuRuleError(f"driver branch {number} is unknown; gpulab offers {offered}")


def check_branch(number: int, families: Iterable[Family]) -> Branch:
    """The branch, if it can drive every family present."""
    chosen = branch(number)
    for family in families:
        if family.last_branch is not None and number > family.last_branch:
            raise GpuRuleError(
                f"{family.name} GPUs are supported up to branch {family.last_branch}; "
                f"branch {number} cannot drive them: use {family.last_branch} or older"
            )
        if number < family.min_branch:
            raise GpuRuleError(
                f"{family.name} GPUs need branch {family.min_branch} or newer, not {number}"
            )
    return chosen


def newest_branch_for(families: Iterable[Family], wanted: int) -> int:
    """``wanted``, capped at the last branch of the oldest family present."""
    caps = [family.last_branch for family in families if family.last_branch is not None]
    return min([wanted, *caps])


def choose_flavour(families: Iterable[Family], branch_number: int) -> Flavour:
    """Open modules where every GPU allows them and the branch defaults to them (R560+).

    Blackwell requires open; Maxwell/Pascal/Volta cannot use them, so a mix of the two
    cannot be driven by one module.
    """
    present = list(families)
    required = [f.name for f in present if f.open_modules == "required"]
    unsupported = [f.name for f in present if f.open_modules == "unsupported"]
    if required and unsupported:
        raise GpuRuleError(
            f"{', '.join(required)} needs the open kernel modules but {', '.join(unsupported)} "
            "cannot use them: one host cannot drive both"
        )
    if required:
        return "open"
    if unsupported or branch_number < 560:
        return "proprietary"
    return "open"


def check_flavour(flavour: Flavour, families: Iterable[Family]) -> Flavour:
    """A flavour the data asked for, if every GPU present allows it."""
    for family in families:
        if flavour == "open" and family.open_modules == "unsupported":
            raise GpuRuleError(f"{family.name} GPUs cannot use the open kernel modules")
        if flavour == "proprietary" and family.open_modules == "required":
            raise GpuRuleError(f"{family.name} GPUs need the open kernel modules")
    return flavour
