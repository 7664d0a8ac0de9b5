"""One test per host and check: ``test_ready[lab-01::Is the driver held?]``.

Parametrized by ``gpulab.verify.plugin`` from ``--inventory``; a failed check fails the test
with its cause and fix, a check that does not apply is skipped as ``n/a: <reason>``.
"""

from __future__ import annotations

import pytest

from gpulab.verify.plugin import Room, record


def test_ready(gpulab_case: tuple[str, str], gpulab_room: Room,
               request: pytest.FixtureRequest) -> None:
    host, check = gpulab_case
    outcome = gpulab_room.outcome(host, check)
    record(request.node, host, check, outcome)
    if outcome.status == "fail":
        pytest.fail(f"{host}: {check} {outcome.message}", pytrace=False)
    if outcome.status == "n/a":
        pytest.skip(f"n/a: {outcome.message}")
