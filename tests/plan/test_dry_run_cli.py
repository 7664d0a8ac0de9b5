"""The dry run the README promises, run as a user runs it: the pyinfra CLI, from elsewhere.

One ``@fake`` host carrying ``gpulab_recorded_facts`` and nothing else; the whole stack
(``deploy/gpu_host.py``) must run to the end, name the packages the recorded machine would
get, touch nothing, and exit 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpulab.facts.model import FactsFile
from gpulab.plan.host import make_plan
from gpulab.settings import parse_settings
from tests.pyinfra_run import run_pyinfra

pytestmark = pytest.mark.plan

REPO = Path(__file__).resolve().parents[2]
FACTS = REPO / "tests" / "plan" / "facts"


@pytest.mark.parametrize("facts_file", ["ubuntu2404-rtx5090.json", "debian12-gtx1650.json"])
@pytest.mark.parametrize("reboot_allowed", [False, True])
def test_pyinfra_dry_run_of_the_whole_stack(
    tmp_path: Path, facts_file: str, reboot_allowed: bool
) -> None:
    recorded = FACTS / facts_file
    data = {"gpulab_recorded_facts": str(recorded), "reboot_allowed": reboot_allowed}
    inventory = tmp_path / "room.py"
    inventory.write_text(f"room = [('@fake/pc-101', {data!r})]\n")
    result = run_pyinfra(inventory, REPO / "deploy" / "gpu_host.py", cwd=tmp_path, timeout=300,
                         env={"PYINFRA_FAKE_DELAY": "0", "PYINFRA_FAKE_DELAY_JITTER": "0"})
    assert result.rc == 0, result.describe()
    assert "Traceback" not in result.output
    plan = make_plan("@fake/pc-101", FactsFile.model_validate_json(recorded.read_text()).facts,
                     parse_settings("@fake/pc-101", data))
    shown = " ".join(result.hosts["@fake/pc-101"].changed)
    assert plan.driver.packages and all(name in shown for name in plan.driver.packages)
    assert plan.toolkit.package and plan.toolkit.package in shown
    assert "gpulab Ollama | Ollama running and enabled" in shown
    if reboot_allowed:  # listed as a real host would get it, never run on @fake
        ops = result.payload["results"]["operations"]  # type: ignore[index]
        assert any("reboot for the driver" in op["name"] for op in ops)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["room.py"]  # nothing written here


def test_readme_inventory_works_when_pyinfra_is_given_a_relative_path(tmp_path: Path) -> None:
    """The README's inventory, beside its facts file, run from its own folder as ``room.py``."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("from pathlib import Path\nroom = ")
    inventory_text = readme[start:readme.index("```", start)]
    (tmp_path / "pc-101.json").write_text((FACTS / "ubuntu2404-rtx5090.json").read_text())
    (tmp_path / "room.py").write_text(inventory_text)
    result = run_pyinfra("room.py", REPO / "deploy" / "gpu_host.py", cwd=tmp_path, timeout=300)
    assert result.rc == 0, result.describe()
    assert "nvidia-driver-580-open" in " ".join(result.hosts["@fake/pc-101"].changed)
