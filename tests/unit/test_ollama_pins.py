"""Release-candidate pins: only from a mirror that keeps the archive, with its sha256."""

from __future__ import annotations

import pytest

from gpulab.settings import SettingsError, parse_settings

pytestmark = pytest.mark.unit

SHA = "a" * 64


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"ollama_sha256": SHA},
        {"ollama_download_base": "http://mirror.lab.test/ollama"},
    ],
)
def test_rc_pin_is_refused_without_mirror_and_checksum(data: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings("pc-1", {"ollama_version": "0.33.0-rc2", **data})
    (problem,) = caught.value.problems
    assert problem.field == "ollama_version"
    assert "ollama_download_base" in problem.message and "ollama_sha256" in problem.message


def test_rc_pin_from_a_mirror_with_its_checksum_is_accepted() -> None:
    settings = parse_settings("pc-1", {
        "ollama_version": "0.33.0-rc2", "ollama_sha256": SHA,
        "ollama_download_base": "http://mirror.lab.test/ollama",
    })
    assert settings.ollama_version == "0.33.0-rc2"


def test_final_release_needs_neither() -> None:
    assert parse_settings("pc-1", {"ollama_version": "0.33.0"}).ollama_sha256 is None
