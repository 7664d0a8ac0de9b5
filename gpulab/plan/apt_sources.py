"""The pure edit of a host's Debian apt sources: components added to its own entries."""

from __future__ import annotations

import re

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
