"""Wall time of each slow phase (image, boots, deploys), printed at the end of the session.

The CI budget is 90 minutes on 2 cores; this table keeps it visible in every run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

PHASES: list[tuple[str, float]] = []


def record_phase(label: str, seconds: float) -> None:
    """Add a row to the wall-time table printed at the end of the session."""
    PHASES.append((label, seconds))


@contextmanager
def timed(label: str) -> Iterator[None]:
    """``with timed("label"):`` records how long the block took."""
    started = time.monotonic()
    try:
        yield
    finally:
        record_phase(label, time.monotonic() - started)
