"""apt state as pyinfra facts, and the pure edit of a host's Debian source components."""

from __future__ import annotations

import re

from pyinfra.api.facts import FactBase

SOURCE_FILES = (
    "/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources"
)
_FILE_MARK = "==> "


class HeldPackages(FactBase[list[str]]):
    """Packages on hold (``apt-mark showhold``).

    .. code:: python

        ["nvidia-driver", "nvidia-kernel-dkms"]
    """

    def command(self) -> str:
        return "apt-mark showhold"

    def requires_command(self) -> str:
        return "apt-mark"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


class AptSourceFiles(FactBase[dict[str, str]]):
    """The text of every apt source file, by path (``sources.list`` and ``sources.list.d``).

    .. code:: python

        {"/etc/apt/sources.list.d/debian.sources": "Types: deb\\nURIs: ...\\n"}
    """

    def command(self) -> str:
        return (
            f"for f in {SOURCE_FILES}; do [ -f \"$f\" ] && "
            f"{{ echo '{_FILE_MARK}'\"$f\"; cat \"$f\"; echo; }}; done; true"
        )

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        files: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in output:
            if line.startswith(_FILE_MARK):
                current = files.setdefault(line[len(_FILE_MARK):], [])
            elif current is not None:
                current.append(line)
        return {path: "\n".join(lines).rstrip("\n") + "\n" for path, lines in files.items()}


_ONE_LINE = re.compile(r"^(\s*deb(?:-src)?\s+(?:\[[^\]]*\]\s+)?\S+\s+)(\S+)((?:\s+\S+)*)\s*$")


def _is_debian_suite(suite: str, codename: str) -> bool:
    return suite == codename or suite.startswith(codename + "-") or suite.startswith(
        codename + "/"
    )


def add_components(text: str, codename: str, components: tuple[str, ...]) -> str:
    """Add missing ``components`` to every entry of ``text`` for ``codename``'s suites.

    Both formats are handled: one-line ``deb URI suite comp...`` and deb822 stanzas with
    ``Suites:`` and ``Components:``. Entries for other suites, and entries without ``main``
    (third-party repositories), are left as they are.

    >>> add_components("deb http://m/debian bookworm main\\n", "bookworm", ("main", "contrib"))
    'deb http://m/debian bookworm main contrib\\n'
    """
    if re.search(r"^\s*Types:", text, flags=re.MULTILINE):
        return _add_components_deb822(text, codename, components)
    lines = []
    for line in text.splitlines():
        match = _ONE_LINE.match(line)
        have = match[3].split() if match else []
        # Only the distribution's own entries (those with "main"); a third-party source
        # for the same codename (docker: "bookworm stable") is left as it is.
        if (match and not line.lstrip().startswith("#") and "main" in have
                and _is_debian_suite(match[2], codename)):
            missing = [c for c in components if c not in have]
            line = match[1] + match[2] + "".join(f" {c}" for c in [*have, *missing])
        lines.append(line)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def _add_components_deb822(text: str, codename: str, components: tuple[str, ...]) -> str:
    stanzas = re.split(r"\n\s*\n", text.strip("\n"))
    edited = []
    for stanza in stanzas:
        suites = re.search(r"^Suites:\s*(.+)$", stanza, flags=re.MULTILINE)
        found = re.search(r"^Components:\s*(.*)$", stanza, flags=re.MULTILINE)
        have = found[1].split() if found else []
        if suites and found and "main" in have and any(
            _is_debian_suite(suite, codename) for suite in suites[1].split()
        ):
            wanted = " ".join([*have, *(c for c in components if c not in have)])
            stanza = stanza[: found.start()] + f"Components: {wanted}" + stanza[found.end():]
        edited.append(stanza)
    return "\n\n".join(edited) + "\n"
