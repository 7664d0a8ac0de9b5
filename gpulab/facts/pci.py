"""NVIDIA GPUs on the PCI bus: ``lspci -nn``, or sysfs where pciutils is not installed."""

from __future__ import annotations

import re

from pyinfra.api.facts import FactBase

from gpulab.facts.model import PciGpu

NVIDIA_VENDOR_ID = "10de"

# PCI class codes of GPU functions: VGA (0300), 3D (0302, datacenter cards and laptop dGPUs) and
# "display controller, other" (0380).  The card's HDMI audio (0403), USB-C (0c03) and UCSI (0c80)
# functions share the vendor id but are not GPUs.
GPU_PCI_CLASSES = frozenset({"0300", "0302", "0380"})

# One `lspci -nn` device line.  `search`, not `match`: pasted listings carry prefixes such as
# "IOMMU Group 28 " or indentation, and `lspci -k` adds "Subsystem:" lines that have no slot.
_LSPCI_NN = re.compile(
    r"(?P<slot>(?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\s+"
    r"(?P<class_name>[^\[\]]*?)\s*\[(?P<class>[0-9a-fA-F]{4})\]:\s+"
    r"(?P<text>.*?)\s*\[(?P<vendor>[0-9a-fA-F]{4}):(?P<device>[0-9a-fA-F]{4})\]"
    r"(?:\s+\(rev [0-9a-fA-F]+\))?(?:\s+\(prog-if [^)]*\))?\s*$"
)
_NVIDIA_VENDOR_NAME = re.compile(r"^nvidia corporation\s*", re.IGNORECASE)


def _short_slot(slot: str) -> str:
    """Drop PCI domain 0000 so lspci and sysfs slots read alike: ``0000:01:00.0`` -> ``01:00.0``.

    Other domains stay (multi-domain servers, WSL's paravirtual bus), as lspci shows them.
    """
    slot = slot.lower()
    return slot[5:] if slot.startswith("0000:") and slot.count(":") == 2 else slot


def parse_lspci_nn(text: str) -> tuple[PciGpu, ...]:
    """NVIDIA GPU functions in ``lspci -nn`` output (audio/USB functions and other vendors dropped).

    Example::

        >>> parse_lspci_nn(
        ...     "0a:00.0 VGA compatible controller [0300]: NVIDIA Corporation GB202 "
        ...     "[GeForce RTX 5090] [10de:2b85] (rev a1)\\n"
        ...     "0a:00.1 Audio device [0403]: NVIDIA Corporation GB202 High Definition Audio "
        ...     "Controller [10de:22e8] (rev a1)"
        ... )
        (PciGpu(slot='0a:00.0', device_id='2b85', name='GB202 [GeForce RTX 5090]'),)

    A device that lspci's pci.ids does not know yet (``NVIDIA Corporation Device [10de:26b9]``) is
    named ``Device 26b9``, as plain ``lspci`` prints it.  Truncated lines are skipped.
    """
    gpus: dict[str, PciGpu] = {}
    for line in text.splitlines():
        m = _LSPCI_NN.search(line)
        if m is None or m["vendor"].lower() != NVIDIA_VENDOR_ID:
            continue
        if m["class"].lower() not in GPU_PCI_CLASSES:
            continue
        device_id = m["device"].lower()
        name = _NVIDIA_VENDOR_NAME.sub("", m["text"].strip())
        if name in ("", "Device"):
            name = f"Device {device_id}"
        slot = _short_slot(m["slot"])
        gpus.setdefault(slot, PciGpu(slot=slot, device_id=device_id, name=name))
    return tuple(gpus.values())


def parse_sysfs_pci(text: str) -> tuple[PciGpu, ...]:
    """NVIDIA GPU functions from our sysfs lines, ``sysfs <slot> <vendor> <device> <class>``.

    Used when lspci is missing; sysfs has no names, so they read ``Device <id>`` like lspci with an
    unknown id.  Example::

        >>> parse_sysfs_pci("sysfs 0000:01:00.0 0x10de 0x2b85 0x030000\\n"
        ...                 "sysfs 0000:01:00.1 0x10de 0x22e8 0x040300")
        (PciGpu(slot='01:00.0', device_id='2b85', name='Device 2b85'),)
    """
    gpus: list[PciGpu] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 5 or parts[0] != "sysfs":
            continue
        _, slot, vendor, device, pci_class = parts
        if vendor.lower().removeprefix("0x") != NVIDIA_VENDOR_ID:
            continue
        # sysfs class is 0xCCSSPP (class, subclass, prog-if); lspci's [0300] is CCSS.
        if pci_class.lower().removeprefix("0x")[:4] not in GPU_PCI_CLASSES:
            continue
        device_id = device.lower().removeprefix("0x")
        gpus.append(PciGpu(slot=_short_slot(slot), device_id=device_id, name=f"Device {device_id}"))
    return tuple(gpus)


def parse_pci_devices(text: str) -> tuple[PciGpu, ...]:
    """Output of ``NvidiaPciDevices``' command: lspci lines, or sysfs lines when lspci is absent."""
    if any(line.startswith("sysfs ") for line in text.splitlines()):
        return parse_sysfs_pci(text)
    return parse_lspci_nn(text)


class NvidiaPciDevices(FactBase[tuple[PciGpu, ...]]):
    """NVIDIA display/3D controllers on the PCI bus, whether or not a driver is installed.

    Runs ``lspci -nn -d 10de:``; without pciutils it lists ``/sys/bus/pci/devices`` instead (ids
    only, no names).  Output and value::

        01:00.0 VGA compatible controller [0300]: NVIDIA Corporation GB202 [GeForce RTX 5090] \
            [10de:2b85] (rev a1)
        01:00.1 Audio device [0403]: NVIDIA Corporation GB202 High Definition Audio Controller \
            [10de:22e8] (rev a1)

        (PciGpu(slot="01:00.0", device_id="2b85", name="GB202 [GeForce RTX 5090]"),)

    WSL 2 shows no NVIDIA function at all (the GPU is a Microsoft paravirtual device): ``()``.
    """

    def command(self) -> str:
        return (
            "if command -v lspci >/dev/null 2>&1; then lspci -nn -d 10de: 2>/dev/null || true; "
            'else for d in /sys/bus/pci/devices/*; do [ -r "$d/vendor" ] || continue; '
            'echo "sysfs ${d##*/} $(cat "$d/vendor") $(cat "$d/device") $(cat "$d/class")"; '
            "done; fi"
        )

    @staticmethod
    def default() -> tuple[PciGpu, ...]:
        return ()

    def process(self, output: list[str]) -> tuple[PciGpu, ...]:
        return parse_pci_devices("\n".join(output))

