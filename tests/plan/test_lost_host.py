"""A host whose connection dies while gpulab prepares it fails alone; the others go on.

The real pyinfra CLI runs the real ``deploy/gpu_host.py`` on two ``@fake`` hosts: one is
planned from a recorded Ubuntu 24.04 + RTX 4090 machine and must get its whole stack; the
other's every command fails as a PC that powers off does. pyinfra lets paramiko's EOFError
through to gpulab, and turns an SSHException inside a fact into that fact's default (marking
the host failed) - gpulab must not plan a machine from those defaults.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pyinfra_run import run_pyinfra

pytestmark = pytest.mark.plan

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "tests/plan/facts/ubuntu2404-rtx4090-580.json"

# The test's deploy: every command on the dead host raises, then the product's own deploy.
DYING_THEN_GPU_HOST = '''
from pyinfra.connectors.fake import FakeConnector
from paramiko import SSHException

answer = FakeConnector.run_shell_command


def dead_or_answer(self, command, *args, **kwargs):
    if self.host.name == "@fake/pc-dead":
        raise {error}("the PC powered off")
    return answer(self, command, *args, **kwargs)


FakeConnector.run_shell_command = dead_or_answer
exec(compile(open({gpu_host!r}).read(), {gpu_host!r}, "exec"))
'''


@pytest.mark.parametrize("error", ["EOFError", "SSHException"])
def test_dead_host_fails_alone_and_the_other_gets_its_stack(tmp_path: Path, error: str) -> None:
    deploy = tmp_path / "deploy.py"
    deploy.write_text(DYING_THEN_GPU_HOST.format(error=error,
                                                 gpu_host=str(REPO / "deploy/gpu_host.py")))
    fake = {"fake_delay": 0, "fake_delay_jitter": 0}
    alive = {**fake, "gpulab_recorded_facts": str(RECORDED)}
    (tmp_path / "inventory.py").write_text(
        f"room = [('@fake/pc-dead', {fake!r}), ('@fake/pc-alive', {alive!r})]\n")
    result = run_pyinfra(tmp_path / "inventory.py", deploy, cwd=tmp_path, timeout=300)
    assert result.failed_hosts == ["@fake/pc-dead"], result.describe()
    assert "@fake/pc-dead" in result.output and "connection" in result.output
    alive_ops = result.hosts["@fake/pc-alive"].changed
    assert any("nvidia-driver-580-open" in op for op in alive_ops), result.describe()
    assert any(op.startswith("gpulab course models") for op in alive_ops), result.describe()
    assert result.rc != 0
