"""Shared assertions for the integration tests: "nothing changed" and "gpulab verify says".

``PyinfraResult.changed_hosts == []`` also holds when pyinfra's JSON did not parse or the host
never ran; ``assert_unchanged`` requires every named host in the parsed result first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.phases import record_phase
from tests.pyinfra_run import PyinfraResult

REPO = Path(__file__).resolve().parents[2]


def assert_unchanged(result: PyinfraResult, hosts: Iterable[str]) -> None:
    """The run succeeded, parsed, covered every host, ran operations there and changed none."""
    wanted = sorted(hosts)
    assert result.rc == 0, result.describe()
    assert result.payload is not None, "pyinfra printed no JSON result\n" + result.describe()
    missing = [name for name in wanted if name not in result.hosts]
    assert not missing, f"not in pyinfra's result: {missing}\n{result.describe()}"
    assert all(result.hosts[name].no_change > 0 for name in wanted), result.describe()
    assert [n for n in wanted if result.hosts[n].changed] == [], result.describe()


@dataclass
class Verdict:
    """One ``gpulab verify --json`` run: exit status and {host: {check: (status, message)}}."""

    rc: int
    hosts: dict[str, dict[str, tuple[str, str]]]
    ready: dict[str, bool]
    raw: dict[str, Any]
    stderr: str

    def failing(self, host: str) -> dict[str, str]:
        return {name: msg for name, (status, msg) in self.hosts[host].items() if status == "fail"}

    def status(self, host: str, check: str) -> str:
        return self.hosts[host][check][0]

    def describe(self) -> str:
        return json.dumps(self.raw, indent=1)[-6000:] + "\n" + self.stderr[-2000:]


def verify(inventory: Path, *args: str, label: str = "verify", cwd: Path = REPO,
           prefix: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Verdict:
    """``gpulab verify INVENTORY --json`` as a user runs it (in ``cwd``, with ``env`` added,
    through ``prefix`` as :func:`tests.pyinfra_run.run_pyinfra`); timed in the summary."""
    started = time.monotonic()
    done = subprocess.run([*prefix, sys.executable, "-m", "gpulab.cli", "verify",
                           str(inventory), "--json", *args], capture_output=True, text=True,
                          timeout=600, check=False, cwd=cwd, env={**os.environ, **(env or {})})
    raw = json.loads(done.stdout) if done.stdout.strip() else {"hosts": []}
    hosts = {h["name"]: {c["name"]: (c["status"], c["message"]) for c in h["checks"]}
             for h in raw["hosts"]}
    ready = {h["name"]: h["ready"] for h in raw["hosts"]}
    verdict = Verdict(done.returncode, hosts, ready, raw, done.stderr)
    record_phase(f"gpulab verify: {label} (rc {done.returncode})", time.monotonic() - started)
    return verdict


def assert_ready(verdict: Verdict, hosts: Iterable[str]) -> None:
    """Exit 0 and every named host ready (no failing check)."""
    for name in hosts:
        assert name in verdict.hosts, verdict.describe()
        assert verdict.failing(name) == {}, verdict.describe()
    assert verdict.rc == 0, verdict.describe()
