"""Real command outputs from public reports, under ``tests/data/recorded/``.

Each file's first line, ``# recorded from SOURCE: what it is``, names where it was published;
the rest is the output as posted.
"""

from __future__ import annotations

from pathlib import Path

RECORDED = Path(__file__).resolve().parent / "data" / "recorded"


def recorded(name: str) -> str:
    """The recorded output ``name`` without its source line."""
    return (RECORDED / name).read_text().split("\n", 1)[1]
