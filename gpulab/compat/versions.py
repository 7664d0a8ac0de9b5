"""Driver version strings as comparable values."""

from __future__ import annotations

import re

_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")


class VersionError(ValueError):
    """A driver or toolkit version that is not numbers separated by dots."""


def parse_version(text: str) -> tuple[int, ...]:
    """``"560.35.03"`` -> ``(560, 35, 3)``; missing parts compare as zero.

    >>> parse_version("570.26") < parse_version("570.124.06")
    True
    """
    text = text.strip()
    if not _VERSION.match(text):
        raise VersionError(f"{text!r} is not a version like 560.35.03")
    parts = tuple(int(part) for part in text.split("."))
    return parts + (0,) * (3 - len(parts))


def branch_of(driver_version: str) -> int:
    """The branch number of a driver version: ``"580.95.05"`` -> ``580``."""
    return parse_version(driver_version)[0]
