"""The README's data reference is generated from the settings models and guarded here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpulab.cli import main
from gpulab.reference import (
    BEGIN,
    END,
    MarkersError,
    data_reference,
    readme_table,
    readme_with_reference,
    update_readme,
)
from gpulab.settings import Settings

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_data_reference_is_current() -> None:
    text = README.read_text()
    assert readme_with_reference(text) == text, (
        "README.md's data reference is stale: run `gpulab reference --update README.md`"
    )


def test_every_key_once_with_its_default_and_meaning() -> None:
    rows = data_reference()
    assert [row["key"] for row in rows] == list(Settings.model_fields)
    by_key = {row["key"]: row for row in rows}
    assert by_key["apt_lock_timeout"]["default"] == 600
    assert by_key["models"]["default"] == ["qwen2.5:7b", "znbang/bge:large-zh-v1.5-f16"]
    assert by_key["apt_proxy"]["default"] is None
    assert all(row["meaning"] for row in rows), "every key needs a description"
    table = readme_table().splitlines()
    assert len(table) == len(rows) + 2
    assert "| `no_proxy` | `[]` | Hosts and CIDRs that bypass https_proxy. |" in table
    assert "| `models` | `qwen2.5:7b`, `znbang/bge:large-zh-v1.5-f16` |" in table[
        [row["key"] for row in rows].index("models") + 2]


def test_a_changed_description_makes_the_readme_stale(tmp_path: Path) -> None:
    stale = README.read_text().replace("Hosts and CIDRs that bypass https_proxy.", "old words")
    assert readme_with_reference(stale) != stale
    readme = tmp_path / "README.md"
    readme.write_text(stale)
    assert update_readme(readme) is True
    assert readme.read_text() == README.read_text()
    assert update_readme(readme) is False


def test_markers_missing_or_reversed_are_an_error() -> None:
    with pytest.raises(MarkersError, match="no data reference"):
        readme_with_reference("# no markers\n")
    with pytest.raises(MarkersError):
        readme_with_reference(f"{END}\n{BEGIN}\n")


def test_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["reference"]) == 0
    assert capsys.readouterr().out.strip() == readme_table()
    assert main(["reference", "--json"]) == 0
    keys = [row["key"] for row in json.loads(capsys.readouterr().out)]
    assert keys == list(Settings.model_fields)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\n| old |\n{END}\nrest\n")
    assert main(["reference", "--update", str(readme)]) == 0
    assert "updated" in capsys.readouterr().out
    assert readme.read_text() == f"intro\n{BEGIN}\n{readme_table()}\n{END}\nrest\n"
    readme.write_text("no markers")
    assert main(["reference", "--update", str(readme)]) == 1
    assert "no data reference" in capsys.readouterr().err
