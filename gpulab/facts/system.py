"""The operating system: os-release, WSL, systemd and memory."""

from __future__ import annotations

import re
import shlex

from pyinfra.api.facts import FactBase

from gpulab.facts.model import OsInfo, parse_wsl_version


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

