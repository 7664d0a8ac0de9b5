"""gpulab installed from its wheel, not the checkout: a dry run of the whole stack finds its
templates and plans every step.

The wheel is built from this checkout and installed into a fresh virtualenv (its dependencies
from the package index, as ``pip install`` gets them); pyinfra then runs ``deploy/gpu_host.py``
on a ``@fake`` host from a directory outside the checkout, so nothing of the repository is on
the import path.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plan.harness import FACTS_DIR

pytestmark = pytest.mark.plan

REPO = Path(__file__).resolve().parents[2]
FACTS = "ubuntu2204-rtx3070.json"

INVENTORY = """\
hosts = [("@fake/pc-01", {{
    "gpulab_recorded_facts": "{facts}", "fake_delay": 0, "fake_delay_jitter": 0,
}})]
"""


def _run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_installed_wheel_runs_the_whole_stack(tmp_path: Path) -> None:
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, REPO, cwd=tmp_path)
    (wheel,) = dist.glob("gpulab-*.whl")
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    _run(venv / "bin" / "pip", "install", "-q", wheel, cwd=tmp_path)

    work.mkdir()
    shutil.copy(REPO / "deploy" / "gpu_host.py", work / "gpu_host.py")
    shutil.copy(FACTS_DIR / FACTS, work / FACTS)
    (work / "inventory.py").write_text(INVENTORY.format(facts=work / FACTS))
    where = _run(venv / "bin" / "python", "-c", "import gpulab; print(gpulab.__file__)", cwd=work)
    assert where.stdout.startswith(str(venv)), where.stdout

    before = sorted(p.name for p in work.iterdir())
    done = _run(venv / "bin" / "pyinfra", "-y", "inventory.py", "gpu_host.py", cwd=work)
    output = done.stdout + done.stderr
    for step in ("apt waits for the dpkg lock", "NVIDIA driver: linux-modules-nvidia-580-open",
                 "CUDA 13.0.0: cuda-toolkit-13-0", "Ollama unit", "Ollama settings drop-in"):
        assert step in output, output
    assert sorted(p.name for p in work.iterdir()) == before  # a dry run leaves nothing behind
