"""Find the Debian mirror this machine already uses, from its own apt sources.

The image builder must fetch from whatever mirror (or caching proxy, or snapshot) the host is
configured for: hard-coding a public mirror breaks offline CI and classroom caches alike. Both
formats are read: deb822 ``*.sources`` files and one-line ``sources.list`` entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` source: a base URI, its suites and components."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


@dataclass(frozen=True)
class Mirrors:
    """The archive and (optional) security mirror for one Debian release."""

    archive: str
    security: str | None


def parse_deb822(text: str) -> list[AptSource]:
    """Parse deb822 stanzas (``Types: deb`` only; ``Enabled: no`` stanzas are skipped)."""
    sources: list[AptSource] = []
    for stanza in _stanzas(text):
        types = stanza.get("types", "").split()
        if "deb" not in types or stanza.get("enabled", "yes").lower() == "no":
            continue
        suites = tuple(stanza.get("suites", "").split())
        comps = tuple(stanza.get("components", "").split())
        for uri in stanza.get("uris", "").split():
            sources.append(AptSource(uri.rstrip("/"), suites, comps))
    return sources


def _stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
            continue
        if raw[0] in " \t" and key:  # continuation line
            current[key] += " " + raw.strip()
            continue
        if ":" in raw:
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def parse_one_line(text: str) -> list[AptSource]:
    """Parse one-line ``deb [options] URI suite components...`` entries."""
    sources: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                continue
            rest = rest[end + 1 :].strip()
        parts = rest.split()
        if len(parts) < 2:
            continue
        sources.append(AptSource(parts[0].rstrip("/"), (parts[1],), tuple(parts[2:])))
    return sources


def pick_mirrors(sources: list[AptSource], suite: str = "bookworm") -> Mirrors | None:
    """The first source carrying ``suite`` is the archive; ``suite-security`` the security one."""
    archive = next((s.uri for s in sources if suite in s.suites), None)
    if archive is None:
        return None
    security = next((s.uri for s in sources if f"{suite}-security" in s.suites), None)
    return Mirrors(archive=archive, security=security)


def read_host_sources(root: Path = Path("/")) -> list[AptSource]:
    """All ``deb`` sources configured on this machine (``root`` is for tests)."""
    apt = root / "etc/apt"
    sources: list[AptSource] = []
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        sources += parse_deb822(path.read_text(errors="replace"))
    lists = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in lists:
        if path.is_file():
            sources += parse_one_line(path.read_text(errors="replace"))
    return sources


def host_mirrors(suite: str = "bookworm", root: Path = Path("/")) -> Mirrors:
    """The host's mirrors for ``suite``; raise with a clear message when there is none."""
    found = pick_mirrors(read_host_sources(root), suite)
    if found is None:
        raise RuntimeError(
            f"no apt source for suite {suite!r} in {root / 'etc/apt'}: the image builder takes "
            "its Debian mirror from this machine's apt configuration"
        )
    return found
