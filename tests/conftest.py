"""Session-wide test output: the phase wall-time table (see ``tests/phases.py``)."""

from __future__ import annotations

import pytest

from tests.phases import PHASES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every recorded phase's wall time, whether or not ``-s`` was given."""
    if not PHASES:
        return
    terminalreporter.write_sep("-", "slow phases (wall time)")
    width = max(len(label) for label, _ in PHASES)
    for label, seconds in PHASES:
        terminalreporter.write_line(f"{label:<{width}}  {seconds:7.1f} s")
