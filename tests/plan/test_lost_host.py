"""A host whose connection dies while gpulab prepares it fails alone; the others go on.

The real pyinfra CLI on two ``@fake`` hosts; one raises paramiko's EOFError (what a PC that
powers off during fact gathering raises) from inside a gpulab deploy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pyinfra_run import run_pyinfra

pytestmark = pytest.mark.plan

DEPLOY = '''
from pyinfra import host
from pyinfra.operations import server

from gpulab.deploys.common import gpulab_deploy


@gpulab_deploy("gathering")
def gathering():
    if host.name == "@fake/pc-dead":
        raise EOFError()
    server.shell(name="after the facts", commands=["true"])


@gpulab_deploy("next deploy")
def next_deploy():
    server.shell(name="next step", commands=["true"])


gathering()
next_deploy()
'''


def test_dead_host_fails_alone_and_is_named(tmp_path: Path) -> None:
    (tmp_path / "deploy.py").write_text(DEPLOY)
    fake = {"fake_delay": 0, "fake_delay_jitter": 0}
    (tmp_path / "inventory.py").write_text(
        f"room = [('@fake/pc-dead', {fake!r}), ('@fake/pc-alive', {fake!r})]\n")
    result = run_pyinfra(tmp_path / "inventory.py", tmp_path / "deploy.py", cwd=tmp_path,
                         timeout=120)
    assert result.failed_hosts == ["@fake/pc-dead"], result.describe()
    assert result.hosts["@fake/pc-alive"].changed == [
        "gathering | after the facts", "next deploy | next step"], result.describe()
    assert "@fake/pc-dead" in result.output and "connection lost" in result.output
    assert result.rc != 0
