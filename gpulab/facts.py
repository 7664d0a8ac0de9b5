"""pyinfra facts that read a host's GPU state, and the pure parsers behind them.

Every fact is a thin ``FactBase`` subclass: ``command()`` prints something, ``process()`` hands the
lines to a ``parse_*`` function here.  The parsers take plain text, so the unit tests feed them the
real outputs recorded under ``tests/data/recorded/`` without any host.

Commands are written for ``sh`` (dash on Debian/Ubuntu), need no extra packages, work without root,
and always exit 0: pyinfra marks a host failed when a fact's command fails, and "nvidia-smi is
broken" or "lspci is missing" are facts to report, not reasons to stop.

``gather_host_facts(host)`` reads them all through ``host.get_fact`` and builds a ``HostFacts``.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any, Literal, Protocol, TypeVar

from pyinfra.api.facts import FactBase
from pyinfra.facts.server import Arch, Hostname, KernelVersion, RebootRequired

from gpulab.hostfacts import (
    CudaToolkit,
    HostFacts,
    OsInfo,
    PciGpu,
    SmiGpu,
    SmiStatus,
    parse_wsl_version,
)

__all__ = [
    "CudaToolkits",
    "IsWsl",
    "LinkTarget",
    "LoadedDriverVersion",
    "MemoryMib",
    "NvidiaPciDevices",
    "NvidiaSmi",
    "OsRelease",
    "SecureBoot",
    "SecureBootState",
    "SystemdRunning",
    "WslSystemd",
    "gather_host_facts",
    "parse_cuda_toolkits",
    "parse_cuda_version_json",
    "parse_cuda_version_txt",
    "parse_is_wsl",
    "parse_lspci_nn",
    "parse_meminfo_total_mib",
    "parse_nvidia_module_version",
    "parse_nvidia_smi_output",
    "parse_nvidia_smi_query",
    "parse_os_release",
    "parse_pci_devices",
    "parse_secure_boot",
    "parse_sysfs_pci",
    "parse_systemctl_state",
    "parse_wsl_conf_systemd",
    "parse_wsl_version",
    "split_smi_cells",
]

T = TypeVar("T")

SecureBootState = Literal["enabled", "disabled", "unsupported"]

NVIDIA_VENDOR_ID = "10de"

# PCI class codes of GPU functions: VGA (0300), 3D (0302, datacenter cards and laptop dGPUs) and
# "display controller, other" (0380).  The card's HDMI audio (0403), USB-C (0c03) and UCSI (0c80)
# functions share the vendor id but are not GPUs.
GPU_PCI_CLASSES = frozenset({"0300", "0302", "0380"})

# Where the Windows driver puts nvidia-smi inside WSL 2; not on PATH for non-login shells or root.
WSL_NVIDIA_SMI = "/usr/lib/wsl/lib/nvidia-smi"

SMI_QUERY_FIELDS = ("name", "driver_version", "memory.total")

# Markers our own commands print; they cannot be confused with the tools' output.
_SMI_NOT_FOUND = "gpulab: nvidia-smi not found"
_SMI_EXIT = re.compile(r"^exit=(\d+)$")
_EFIVAR = "gpulab-efivar"
_TOOLKIT_HEADER = re.compile(r"^==> (?P<path>.+?) <==$")

_VERSION = re.compile(r"^\d+(?:\.\d+)+$")


# --------------------------------------------------------------------------------------------
# PCI devices: lspci -nn, or sysfs where pciutils is not installed
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# nvidia-smi
# --------------------------------------------------------------------------------------------

# Cells nvidia-smi prints instead of a value.
_SMI_MISSING = frozenset(
    {
        "",
        "N/A",
        "[N/A]",
        "[Not Supported]",
        "[Unknown Error]",
        "[Insufficient Permissions]",
        "[GPU is lost]",
        "[Requested functionality has been deprecated]",
    }
)
# Header cells carry units ("memory.total [MiB]") unless `nounits`.
_SMI_HEADER_UNIT = re.compile(r"\s*\[[^\]]*\]$")


def split_smi_cells(line: str) -> list[str | None]:
    """Split one ``--format=csv`` line; ``[N/A]``, ``[Not Supported]`` and the like become None.

    Example::

        >>> split_smi_cells("2004, 2004, 0, 44, [N/A], 0, 0")
        ['2004', '2004', '0', '44', None, '0', '0']
    """
    cells = [cell.strip() for cell in line.split(",")]
    return [None if cell in _SMI_MISSING else cell for cell in cells]


def _smi_mib(cell: str | None) -> int | None:
    """``46068 MiB`` (csv) or ``46068`` (csv,nounits) -> 46068."""
    if cell is None:
        return None
    m = re.fullmatch(r"(\d+)(?:\s*MiB)?", cell)
    return int(m[1]) if m else None


def parse_nvidia_smi_query(output: str, exit_code: int | None) -> SmiStatus:
    """``nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,...`` -> SmiStatus.

    ``exit_code`` is nvidia-smi's status (None: not installed).  Works with or without
    ``noheader``/``nounits``; a header line, when present, says which column is which, so extra
    columns are fine.  On failure, ``message`` is the first line nvidia-smi printed.  Example::

        >>> status = parse_nvidia_smi_query("NVIDIA GeForce RTX 5090, 575.57.08, 32607", 0)
        >>> status.exit_code, status.gpus[0].driver_version, status.gpus[0].memory_total_mib
        (0, '575.57.08', 32607)
        >>> parse_nvidia_smi_query("NVIDIA-SMI has failed because it couldn't ...", 9).message
        "NVIDIA-SMI has failed because it couldn't ..."
    """
    if exit_code is None:
        return SmiStatus()
    columns: list[str] = list(SMI_QUERY_FIELDS)
    gpus: list[SmiGpu] = []
    other: list[str] = []
    for raw in output.splitlines():
        line = raw.strip()
        if not line:
            continue
        cells = split_smi_cells(line)
        names = [_SMI_HEADER_UNIT.sub("", cell or "") for cell in cells]
        if "name" in names and "driver_version" in names:
            columns = names
            continue
        gpu = _smi_row(cells, columns) if exit_code == 0 else None
        if gpu is None:
            other.append(line)
        else:
            gpus.append(gpu)
    message = "" if gpus else (other[0] if other else "")
    return SmiStatus(exit_code=exit_code, gpus=tuple(gpus), message=message)


def _smi_row(cells: list[str | None], columns: list[str]) -> SmiGpu | None:
    """One data row as SmiGpu, or None when the line is not a row of this query."""
    if len(cells) > len(columns) and columns[0] == "name":
        # A comma inside the GPU name: the surplus cells belong to the name.
        extra = len(cells) - len(columns)
        cells = [", ".join(c or "" for c in cells[: extra + 1]), *cells[extra + 1 :]]
    if len(cells) != len(columns) or "name" not in columns or "driver_version" not in columns:
        return None
    row = dict(zip(columns, cells, strict=True))
    name = row["name"]
    driver = row["driver_version"]
    # The driver version is what tells a data row from an error line that happens to have commas.
    if name is None or (driver is not None and not _VERSION.match(driver)):
        return None
    return SmiGpu(
        name=name,
        driver_version=driver or "",
        memory_total_mib=_smi_mib(row.get("memory.total")),
    )


def parse_nvidia_smi_output(text: str) -> SmiStatus:
    """Output of ``NvidiaSmi``' command: our not-found marker, or nvidia-smi's lines + ``exit=N``.

    Example::

        >>> parse_nvidia_smi_output("NVIDIA L40S, 595.71.05, 46068\\nexit=0").gpus[0].driver_version
        '595.71.05'
        >>> parse_nvidia_smi_output("gpulab: nvidia-smi not found")
        SmiStatus(exit_code=None, gpus=(), message='')
    """
    lines = text.splitlines()
    if any(line.strip() == _SMI_NOT_FOUND for line in lines):
        return SmiStatus()
    while lines and not lines[-1].strip():
        lines.pop()
    exit_match = _SMI_EXIT.match(lines[-1].strip()) if lines else None
    if exit_match is None:
        # No status line (should not happen with our command): trust rows if there are any,
        # otherwise call it nvidia-smi's "other error" (255).
        status = parse_nvidia_smi_query("\n".join(lines), 0)
        return status if status.gpus else parse_nvidia_smi_query("\n".join(lines), 255)
    exit_code = int(exit_match[1])
    body = "\n".join(lines[:-1])
    # 126/127: the shell could not run it at all (a dangling symlink, a stale PATH entry).
    if exit_code in (126, 127):
        return SmiStatus()
    return parse_nvidia_smi_query(body, exit_code)


class NvidiaSmi(FactBase[SmiStatus]):
    """What ``nvidia-smi --query-gpu=name,driver_version,memory.total`` says, exit code included.

    Looks on PATH, then in ``/usr/lib/wsl/lib`` (WSL 2).  Output and value, three cases::

        NVIDIA GeForce RTX 5090, 575.57.08, 32607
        exit=0
        -> SmiStatus(exit_code=0, gpus=(SmiGpu(name="NVIDIA GeForce RTX 5090",
                     driver_version="575.57.08", memory_total_mib=32607),))

        NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. ...
        exit=9
        -> SmiStatus(exit_code=9, message="NVIDIA-SMI has failed because it couldn't ...")

        gpulab: nvidia-smi not found
        -> SmiStatus(exit_code=None)

    On WSL 2 ``driver_version`` is the Windows driver's (e.g. ``566.36``).
    """

    def command(self) -> str:
        query = ",".join(SMI_QUERY_FIELDS)
        # `timeout`: a wedged GPU can hang nvidia-smi for minutes; 124 then reads as a failure.
        return (
            "if command -v nvidia-smi >/dev/null 2>&1; then smi=nvidia-smi; "
            f"elif [ -x {WSL_NVIDIA_SMI} ]; then smi={WSL_NVIDIA_SMI}; else smi=; fi; "
            f'if [ -z "$smi" ]; then echo "{_SMI_NOT_FOUND}"; else '
            f'timeout 60 "$smi" --query-gpu={query} --format=csv,noheader,nounits 2>&1; '
            'echo "exit=$?"; fi'
        )

    @staticmethod
    def default() -> SmiStatus:
        return SmiStatus()

    def process(self, output: list[str]) -> SmiStatus:
        return parse_nvidia_smi_output("\n".join(output))


# --------------------------------------------------------------------------------------------
# WSL and systemd
# --------------------------------------------------------------------------------------------


def parse_is_wsl(text: str) -> bool:
    """True when ``uname -r`` / ``/proc/version`` names Microsoft's kernel (WSL 1 or 2)."""
    return parse_wsl_version(text) is not None


class IsWsl(FactBase[bool]):
    """Whether the host is a WSL distro (case-insensitive "microsoft" in the kernel release).

    Output and value::

        6.6.87.2-microsoft-standard-WSL2
        Linux version 6.6.87.2-microsoft-standard-WSL2 (root@439a258ad544) (gcc (GCC) 11.2.0, ...
        -> True

    Use ``parse_wsl_version(facts.kernel)`` to tell WSL 1 (no GPU support) from WSL 2.
    """

    def command(self) -> str:
        return "uname -r; cat /proc/version 2>/dev/null || true"

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return parse_is_wsl("\n".join(output))


_INI_SECTION = re.compile(r"^\[\s*(?P<name>[^\]]+?)\s*\]")


def parse_wsl_conf_systemd(text: str) -> bool:
    """True when ``/etc/wsl.conf`` sets ``systemd=true`` in ``[boot]`` (names and value any case).

    Comments (``#``/``;``, whole-line or after a value) are ignored; the last setting wins, as in
    WSL's own reader.  Example::

        >>> parse_wsl_conf_systemd("[boot]\\nsystemd=true\\n")
        True
        >>> parse_wsl_conf_systemd("[user]\\nsystemd=true\\n")
        False
    """
    section = ""
    enabled = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if m := _INI_SECTION.match(line):
            section = m["name"].lower()
            continue
        key, sep, value = line.partition("=")
        if not sep or section != "boot" or key.strip().lower() != "systemd":
            continue
        value = re.split(r"[#;]", value, maxsplit=1)[0].strip().strip("\"'")
        enabled = value.lower() == "true"
    return enabled


class WslSystemd(FactBase[bool]):
    """Whether ``/etc/wsl.conf`` asks WSL to boot systemd (``[boot]`` ``systemd=true``).

    Output and value::

        [boot]
        systemd=true
        -> True

    A missing file reads as False.  Only meaningful on WSL; the running state is ``SystemdRunning``.
    """

    def command(self) -> str:
        return "cat /etc/wsl.conf 2>/dev/null || true"

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return parse_wsl_conf_systemd("\n".join(output))


# "starting": systemd is PID 1 and manages units, it just has jobs left (WSL often sits here for
# a while after boot); reading that as "no systemd" would send the plan down the wrong path.
_SYSTEMD_UP = frozenset({"running", "degraded", "starting"})


def parse_systemctl_state(text: str) -> bool:
    """True when ``systemctl is-system-running`` says systemd is up (running/degraded/starting).

    ``offline`` or "System has not been booted with systemd as init system" (WSL without systemd,
    containers) is False.  Example::

        >>> parse_systemctl_state("degraded")
        True
        >>> parse_systemctl_state("offline")
        False
    """
    for raw in text.splitlines():
        line = raw.strip().lower()
        if line:
            return line in _SYSTEMD_UP
    return False


class SystemdRunning(FactBase[bool]):
    """Whether systemd runs as init, from ``systemctl is-system-running``.

    Output and value::

        degraded
        -> True

        System has not been booted with systemd as init system (PID 1). Can't operate.
        -> False
    """

    def command(self) -> str:
        # It exits non-zero for "degraded" too, hence `|| true`; stderr carries the no-systemd text.
        return (
            "if command -v systemctl >/dev/null 2>&1; "
            "then systemctl is-system-running 2>&1 || true; else echo no-systemctl; fi"
        )

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return parse_systemctl_state("\n".join(output))


# --------------------------------------------------------------------------------------------
# Secure Boot
# --------------------------------------------------------------------------------------------


def parse_secure_boot(text: str) -> SecureBootState:
    """``mokutil --sb-state`` (or our efivars fallback lines) -> enabled/disabled/unsupported.

    "SecureBoot validation is disabled in shim" reads as disabled: the kernel then honours shim's
    MokSBStateRT, turns lockdown off and loads unsigned (DKMS) modules, which is what the plan
    cares about.  No EFI, or a firmware without the variable, is ``unsupported``.  Example::

        >>> parse_secure_boot("SecureBoot enabled")
        'enabled'
        >>> parse_secure_boot("EFI variables are not supported on this system")
        'unsupported'
    """
    lines = [line.strip().lower() for line in text.splitlines() if line.strip()]
    if any(line.startswith(_EFIVAR) for line in lines):
        values: dict[str, str] = {}
        for line in lines:
            if line.startswith(_EFIVAR):
                key, _, value = line.removeprefix(_EFIVAR).strip().partition("=")
                values[key] = value
        if values.get("securebootstate") != "1":
            return "disabled" if values.get("securebootstate") == "0" else "unsupported"
        return "disabled" if values.get("moksbstatert") == "1" else "enabled"
    if any("validation is disabled in shim" in line for line in lines):
        return "disabled"
    if "secureboot enabled" in lines:
        return "enabled"
    if "secureboot disabled" in lines:
        return "disabled"
    return "unsupported"


_EFIVARS = "/sys/firmware/efi/efivars"
# EFI global-variable GUID (SecureBoot) and shim's GUID (MokSBStateRT).
_SB_VAR = f"{_EFIVARS}/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
_MOK_SB_VAR = f"{_EFIVARS}/MokSBStateRT-605dab50-e046-4300-abb6-3dd810dd8b23"


class SecureBoot(FactBase[SecureBootState]):
    """Secure Boot state: ``enabled``, ``disabled`` or ``unsupported`` (BIOS boot, VM, WSL).

    Runs ``mokutil --sb-state``; without mokutil it reads the EFI variables (byte 5 of an efivarfs
    file is the value; the first four are attributes).  Output and value::

        SecureBoot enabled
        -> "enabled"

        EFI variables are not supported on this system
        -> "unsupported"
    """

    def command(self) -> str:
        return (
            "if command -v mokutil >/dev/null 2>&1; then mokutil --sb-state 2>&1 || true; "
            f"elif [ -r {_SB_VAR} ]; then "
            f'echo "{_EFIVAR} SecureBootState=$(od -An -t u1 -j4 -N1 {_SB_VAR} | tr -d " ")"; '
            f"if [ -r {_MOK_SB_VAR} ]; then "
            f'echo "{_EFIVAR} MokSBStateRT=$(od -An -t u1 -j4 -N1 {_MOK_SB_VAR} | tr -d " ")"; fi; '
            f'else echo "{_EFIVAR} SecureBootState=absent"; fi'
        )

    @staticmethod
    def default() -> SecureBootState:
        return "unsupported"

    def process(self, output: list[str]) -> SecureBootState:
        return parse_secure_boot("\n".join(output))


# --------------------------------------------------------------------------------------------
# Loaded driver, CUDA toolkits
# --------------------------------------------------------------------------------------------

_NVRM = re.compile(r"NVRM version:.*?Kernel Module(?: for \S+)?\s+(?P<version>\d+(?:\.\d+)+)")


def parse_nvidia_module_version(text: str) -> str | None:
    """Driver version of the loaded nvidia module, or None when it is not loaded.

    Reads ``/sys/module/nvidia/version`` (just the version) or ``/proc/driver/nvidia/version``
    (proprietary or open flavour).  Example::

        >>> parse_nvidia_module_version("580.95.05")
        '580.95.05'
        >>> parse_nvidia_module_version(
        ...     "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  565.57.01  Release Build"
        ... )
        '565.57.01'
    """
    for raw in text.splitlines():
        line = raw.strip()
        if m := _NVRM.search(line):
            return m["version"]
        if _VERSION.match(line):
            return line
    return None


class LoadedDriverVersion(FactBase[str | None]):
    """Version of the nvidia kernel module that is loaded now (None: not loaded, or WSL).

    This is the running driver; after a driver upgrade it differs from the packages until reboot.
    Output and value::

        580.95.05
        -> "580.95.05"
    """

    def command(self) -> str:
        return (
            "cat /sys/module/nvidia/version 2>/dev/null "
            "|| cat /proc/driver/nvidia/version 2>/dev/null || true"
        )

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        return parse_nvidia_module_version("\n".join(output))


# The "cuda" object's version; used when the file is not valid JSON (pasted or truncated).
_CUDA_JSON_VERSION = re.compile(r'"cuda"\s*:\s*\{[^{}]*?"version"\s*:\s*"(?P<version>[^"]+)"')


def parse_cuda_version_json(text: str) -> str | None:
    """``cuda.version`` of a toolkit's ``version.json`` (CUDA >= 11.1), verbatim.

    Some releases stamp a build date (``11.8.20220929``, ``12.6.20241114``); it is kept as is.
    Example::

        >>> parse_cuda_version_json('{"cuda": {"name": "CUDA SDK", "version": "13.0.2"}}')
        '13.0.2'
    """
    try:
        data: Any = json.loads(text)
    except ValueError:
        m = _CUDA_JSON_VERSION.search(text)
        return m["version"] if m else None
    if isinstance(data, dict):
        cuda = data.get("cuda")
        if isinstance(cuda, dict) and isinstance(cuda.get("version"), str):
            return str(cuda["version"])
    return None


def parse_cuda_version_txt(text: str) -> str | None:
    """Version in an old toolkit's ``version.txt`` (CUDA <= 11.0). Example::

    >>> parse_cuda_version_txt("CUDA Version 10.0.130\\nCUDA Patch Version 10.0.130.1")
    '10.0.130'
    """
    m = re.search(r"^\s*CUDA Version\s+(\S+)", text, re.MULTILINE)
    return m[1] if m else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def parse_cuda_toolkits(text: str) -> tuple[CudaToolkit, ...]:
    """Toolkits from our listing: ``==> <file> <==`` headers, each followed by that file.

    A directory without a version file (left behind by ``apt remove``) is not a toolkit.  Sorted
    by version.  Example::

        >>> parse_cuda_toolkits('==> /usr/local/cuda-12.4/version.json <==\\n'
        ...                     '{"cuda": {"name": "CUDA SDK", "version": "12.4.1"}}')
        (CudaToolkit(path='/usr/local/cuda-12.4', version='12.4.1'),)
    """
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if m := _TOOLKIT_HEADER.match(line.strip()):
            sections.append((m["path"], []))
        elif sections:
            sections[-1][1].append(line)
    toolkits: list[CudaToolkit] = []
    for path, body in sections:
        directory, _, filename = path.rpartition("/")
        content = "\n".join(body)
        if filename == "version.json":
            version = parse_cuda_version_json(content)
        elif filename == "version.txt":
            version = parse_cuda_version_txt(content)
        else:
            version = None
        if version:
            toolkits.append(CudaToolkit(path=directory, version=version))
    return tuple(sorted(toolkits, key=lambda t: (_version_key(t.version), t.path)))


class CudaToolkits(FactBase[tuple[CudaToolkit, ...]]):
    """CUDA toolkits installed under ``/usr/local/cuda-X.Y`` (not the ``cuda``/``cuda-X`` links).

    Output and value::

        ==> /usr/local/cuda-12.9/version.json <==
        { "cuda" : { "name" : "CUDA SDK", "version" : "12.9.1" }, ... }
        -> (CudaToolkit(path="/usr/local/cuda-12.9", version="12.9.1"),)
    """

    def command(self) -> str:
        # Symlinks are skipped: cuda-12 -> /etc/alternatives/cuda-12 would list 12.x twice.
        return (
            "for d in /usr/local/cuda-*; do "
            '[ -d "$d" ] && [ ! -L "$d" ] || continue; '
            'for f in "$d/version.json" "$d/version.txt"; do '
            '[ -r "$f" ] || continue; echo "==> $f <=="; cat "$f"; echo; break; '
            "done; done"
        )

    @staticmethod
    def default() -> tuple[CudaToolkit, ...]:
        return ()

    def process(self, output: list[str]) -> tuple[CudaToolkit, ...]:
        return parse_cuda_toolkits("\n".join(output))


# --------------------------------------------------------------------------------------------
# OS and memory
# --------------------------------------------------------------------------------------------

_OS_RELEASE_LINE = re.compile(r"^\s*(?P<key>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def _shell_value(value: str) -> str:
    """Undo os-release's shell quoting: ``"Ubuntu 22.04.5 LTS"`` -> ``Ubuntu 22.04.5 LTS``."""
    try:
        return " ".join(shlex.split(value))
    except ValueError:
        return value.strip().strip("\"'")


def parse_os_release(text: str) -> OsInfo:
    """``/etc/os-release`` -> OsInfo.  Example::

        >>> info = parse_os_release('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\\n'
        ...                         'VERSION_ID="12"\\nVERSION="12 (bookworm)"\\nID=debian')
        >>> (info.id, info.version_id, info.codename, info.pretty_name)
        ('debian', '12', 'bookworm', 'Debian GNU/Linux 12 (bookworm)')

    Missing codename falls back to ``UBUNTU_CODENAME``, then to a one-word ``VERSION`` suffix
    such as ``(bookworm)``.  Lines that are not ``KEY=value`` are ignored.
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        if m := _OS_RELEASE_LINE.match(line):
            values[m["key"]] = _shell_value(m["value"])
    codename = values.get("VERSION_CODENAME") or values.get("UBUNTU_CODENAME") or ""
    if not codename and (m := re.search(r"\((\w+)\)\s*$", values.get("VERSION", ""))):
        codename = m[1].lower()
    return OsInfo(
        id=values.get("ID", "").lower(),
        version_id=values.get("VERSION_ID", ""),
        codename=codename,
        pretty_name=values.get("PRETTY_NAME", ""),
    )


class OsRelease(FactBase[OsInfo]):
    """The distribution, from ``/etc/os-release``.

    Output and value::

        PRETTY_NAME="Ubuntu 24.04.2 LTS"
        VERSION_ID="24.04"
        VERSION_CODENAME=noble
        ID=ubuntu
        ...
        -> OsInfo(id="ubuntu", version_id="24.04", codename="noble",
                  pretty_name="Ubuntu 24.04.2 LTS")

    Without the file: ``OsInfo(id="", version_id="")``, which no plan supports.
    """

    def command(self) -> str:
        return "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null || true"

    @staticmethod
    def default() -> OsInfo:
        return OsInfo(id="", version_id="")

    def process(self, output: list[str]) -> OsInfo:
        return parse_os_release("\n".join(output))


def parse_meminfo_total_mib(text: str) -> int:
    """``MemTotal`` of ``/proc/meminfo`` in MiB (0 when absent). Example::

    >>> parse_meminfo_total_mib("MemTotal:       32768000 kB")
    32000
    """
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE | re.IGNORECASE)
    return int(m[1]) // 1024 if m else 0


class MemoryMib(FactBase[int]):
    """Total RAM in MiB, from ``/proc/meminfo`` (inside WSL: what the WSL VM was given).

    Output and value::

        MemTotal:       32768000 kB
        -> 32000
    """

    def command(self) -> str:
        return "grep '^MemTotal:' /proc/meminfo || true"

    @staticmethod
    def default() -> int:
        return 0

    def process(self, output: list[str]) -> int:
        return parse_meminfo_total_mib("\n".join(output))


class LinkTarget(FactBase[str | None]):
    """Where a symlink points (``readlink``), or None when the path is no symlink.

    .. code:: python

        host.get_fact(LinkTarget, path="/etc/alternatives/cuda")  # "/usr/local/cuda-12.6"
    """

    def command(self, path: str) -> str:
        return f"readlink {shlex.quote(path)} 2>/dev/null || true"

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        text = "".join(output).strip()
        return text or None


# --------------------------------------------------------------------------------------------
# All facts -> HostFacts
# --------------------------------------------------------------------------------------------


class FactHost(Protocol):
    """What ``gather_host_facts`` needs of a host: pyinfra's ``Host.get_fact``."""

    def get_fact(self, name_or_cls: type[FactBase[T]], *args: Any, **kwargs: Any) -> T: ...


def _text(value: object, fallback: str) -> str:
    """pyinfra's plain facts (Hostname, Arch, ...) return None when the command printed nothing."""
    text = str(value).strip() if value is not None else ""
    return text or fallback


def gather_host_facts(host: FactHost) -> HostFacts:
    """Read every fact gpulab plans from, through ``host.get_fact``, into one HostFacts.

    Example (inside a pyinfra deploy or with a connected ``Host``)::

        facts = gather_host_facts(host)
        facts.pci_gpus
        # (PciGpu(slot="01:00.0", device_id="2b85", name="GB202 [GeForce RTX 5090]"),)

    ``WslSystemd`` is only read on WSL, so ``wsl_systemd`` stays None elsewhere.
    """
    hostname = _text(host.get_fact(Hostname), "localhost")
    wsl = bool(host.get_fact(IsWsl))
    return HostFacts(
        hostname=hostname,
        arch=_text(host.get_fact(Arch), "x86_64"),
        os=host.get_fact(OsRelease),
        kernel=_text(host.get_fact(KernelVersion), ""),
        wsl=wsl,
        wsl_systemd=bool(host.get_fact(WslSystemd)) if wsl else None,
        systemd_running=bool(host.get_fact(SystemdRunning)),
        secure_boot=host.get_fact(SecureBoot),
        pci_gpus=host.get_fact(NvidiaPciDevices),
        smi=host.get_fact(NvidiaSmi),
        loaded_driver_version=host.get_fact(LoadedDriverVersion),
        cuda_toolkits=host.get_fact(CudaToolkits),
        reboot_required=bool(host.get_fact(RebootRequired)),
        memory_mib=int(host.get_fact(MemoryMib)),
    )
