"""An upgrade removes the /opt/ollama trees older than the version it switched away from."""

from __future__ import annotations

import re

import pytest

from tests.plan.test_plan_ollama import _plan

pytestmark = pytest.mark.plan

DIRS = re.compile(r"for d in /opt/ollama/\*/")


def test_upgrade_keeps_new_and_previous_and_removes_the_rest() -> None:
    planned = _plan("ubuntu2204-rtx3070.json", {"ollama_version": "0.34.2"}, responses={
        re.compile(r"readlink /usr/local/bin/ollama"): "/opt/ollama/0.32.9/bin/ollama",
        DIRS: ["0.12.6", "0.32.7", "0.32.9"],
    })
    removed = [name for name in planned.names() if "old Ollama" in name]
    assert removed == ["gpulab Ollama | old Ollama 0.12.6 removed",
                       "gpulab Ollama | old Ollama 0.32.7 removed"]
    assert "0.32.9" not in " ".join(removed)


def test_two_versions_installed_removes_nothing() -> None:
    planned = _plan("ubuntu2204-rtx3070.json", responses={
        re.compile(r"readlink /usr/local/bin/ollama"): "/opt/ollama/0.32.9/bin/ollama",
        DIRS: ["0.32.9", "0.34.2"],
    })
    assert not [name for name in planned.names() if "old Ollama" in name]
