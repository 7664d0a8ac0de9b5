"""The README's code map names every module of the package, in its folder's row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _code_map() -> str:
    readme = (REPO / "README.md").read_text()
    return readme[readme.index("## Code map"):readme.index("## How it is tested")]


def _code_map_rows(section: str) -> dict[str, str]:
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) >= 3 and cells[1].startswith("`gpulab/"):
            rows[cells[1].split("`")[1]] = line
    return rows


def test_every_module_is_in_its_folders_row() -> None:
    section = _code_map()
    rows = _code_map_rows(section)
    missing = []
    for module in sorted((REPO / "gpulab").rglob("*.py")):
        if module.name == "__init__.py":
            continue
        relative = module.relative_to(REPO)
        folder = f"{relative.parent}/"
        if folder == "gpulab/":
            if f"`{relative}`" not in section:
                missing.append(str(relative))
        elif not re.search(rf"`{module.stem}(\.py)?`", rows.get(folder, "")):
            missing.append(str(relative))
    assert not missing, f"README's code map does not name: {missing}"
