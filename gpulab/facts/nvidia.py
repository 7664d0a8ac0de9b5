"""The NVIDIA driver as the host runs it: ``nvidia-smi`` and the loaded kernel module."""

from __future__ import annotations

import re

from pyinfra.api.facts import FactBase

from gpulab.facts.model import SmiGpu, SmiStatus

# Where the Windows driver puts nvidia-smi inside WSL 2; not on PATH for non-login shells or root.
WSL_NVIDIA_SMI = "/usr/lib/wsl/lib/nvidia-smi"

SMI_QUERY_FIELDS = ("name", "driver_version", "memory.total")

# Markers our own commands print; they cannot be confused with the tools' output.
_SMI_NOT_FOUND = "gpulab: nvidia-smi not found"
_SMI_EXIT = re.compile(r"^exit=(\d+)$")
_VERSION = re.compile(r"^\d+(?:\.\d+)+$")

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

_NVRM = re.compile(r"NVRM version:.*?Kernel Module(?: for \S+)?\s+(?P<version>\d+(?:\.\d+)+)")


# Shared with the post-reboot driver check, which must read the same two versions.
LOADED_MODULE_COMMAND = (
    "cat /sys/module/nvidia/version 2>/dev/null "
    "|| cat /proc/driver/nvidia/version 2>/dev/null || true"
)
NVML_LIBRARY_COMMAND = "ls -1 /usr/lib/*-linux-gnu/libnvidia-ml.so.* 2>/dev/null || true"


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
        return LOADED_MODULE_COMMAND

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        return parse_nvidia_module_version("\n".join(output))


_NVML_LIBRARY = re.compile(r"libnvidia-ml\.so\.(?P<version>\d+(?:\.\d+)+)$")


def parse_driver_library_version(text: str) -> str | None:
    """The driver version in the NVML library's file name, or None without one.

    NVML is what nvidia-smi loads, so its version is the one the "Driver/library version
    mismatch" compares with the loaded module's. Example::

        >>> parse_driver_library_version("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05")
        '580.95.05'
        >>> parse_driver_library_version("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1") is None
        True
    """
    for raw in text.splitlines():
        if m := _NVML_LIBRARY.search(raw.strip()):
            return m["version"]
    return None


class DriverLibraryVersion(FactBase[str | None]):
    """Version of the installed driver's userspace (None: no driver libraries, or WSL, whose
    ``/usr/lib/wsl/lib`` carries only ``libnvidia-ml.so.1``). Output and value::

        /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05
        -> "580.95.05"
    """

    def command(self) -> str:
        return NVML_LIBRARY_COMMAND

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        return parse_driver_library_version("\n".join(output))
