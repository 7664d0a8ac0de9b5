"""Which old /opt/ollama/<version> trees an upgrade removes: all but current and previous."""

from __future__ import annotations

import pytest

from gpulab.plan.ollama import version_in_link, versions_to_remove

pytestmark = pytest.mark.unit


def test_upgrade_keeps_the_version_it_switched_away_from() -> None:
    installed = ["0.12.6", "0.32.9", "0.33.0", "0.34.2"]
    assert versions_to_remove(installed, "0.34.2", "0.12.6") == ["0.32.9", "0.33.0"]


def test_rerun_keeps_the_newest_other_version() -> None:
    installed = ["0.12.10", "0.12.6", "0.9.0", "0.34.2"]
    assert versions_to_remove(installed, "0.34.2", "0.34.2") == ["0.9.0", "0.12.6"]


def test_release_candidate_sorts_before_its_final_release() -> None:
    assert versions_to_remove(["0.33.0", "0.33.0-rc2", "0.34.2"], "0.34.2", None) == [
        "0.33.0-rc2"
    ]


def test_downgrade_keeps_the_newer_version_it_came_from() -> None:
    assert versions_to_remove(["0.32.9", "0.33.0", "0.34.2"], "0.32.9", "0.34.2") == ["0.33.0"]


def test_nothing_else_installed_removes_nothing() -> None:
    assert versions_to_remove(["0.34.2"], "0.34.2", None) == []
    assert versions_to_remove([], "0.34.2", None) == []


def test_names_that_are_no_release_are_left_alone() -> None:
    assert versions_to_remove(["backup", "0.33.0", "0.34.2", "0.32.9"], "0.34.2", None) == [
        "0.32.9"
    ]


def test_link_target_names_its_version() -> None:
    assert version_in_link("/opt/ollama/0.33.0-rc2/bin/ollama") == "0.33.0-rc2"
    assert version_in_link("/usr/local/lib/ollama-old") is None
    assert version_in_link(None) is None
