"""A refusal fails the host with its reason, as pyinfra runs the callback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gpulab.deploys.ollama import refused

pytestmark = pytest.mark.unit


def test_refusal_callback_gets_state_and_host_and_fails(caplog: pytest.LogCaptureFixture) -> None:
    (command,) = list(refused._inner(reason="firewalld is active: open port 11434 there"))
    host = SimpleNamespace(print_prefix="[pc-101] ")
    with caplog.at_level("ERROR", logger="pyinfra"):
        assert command.execute(SimpleNamespace(), host, {}) is False
    assert "[pc-101] firewalld is active: open port 11434 there" in caplog.text
