"""Run the real ``pyinfra`` CLI as a subprocess and summarise what changed on which host.

Tests and benchmarks drive pyinfra exactly as a user does (a separate process, an inventory file,
a deploy file). ``--json`` (pyinfra >= 3.x) prints the results on stdout as JSON: per operation
the hosts that changed (``success``), failed (``error``) and did not change (``no_change``), plus
``failed_hosts``. Logs stay on stderr. That is parsed here, not the human-readable table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class HostSummary:
    """One host's outcome over the whole run."""

    changed: list[str] = field(default_factory=list)  # operation names that changed something
    errors: list[str] = field(default_factory=list)
    no_change: int = 0


@dataclass
class PyinfraResult:
    """Exit code, output and the parsed per-host summary of one ``pyinfra`` run."""

    rc: int
    stdout: str
    stderr: str
    seconds: float
    hosts: dict[str, HostSummary]
    failed_hosts: list[str]
    payload: dict[str, object] | None

    @property
    def output(self) -> str:
        return self.stderr + self.stdout

    @property
    def changed_hosts(self) -> list[str]:
        return sorted(h for h, s in self.hosts.items() if s.changed)

    def describe(self) -> str:
        """Short text for assertion messages."""
        lines = [f"rc={self.rc} in {self.seconds:.1f}s failed_hosts={self.failed_hosts}"]
        for name, s in sorted(self.hosts.items()):
            lines.append(f"  {name}: changed={s.changed} errors={s.errors} "
                         f"no_change={s.no_change}")
        lines.append("--- output tail ---")
        lines.append(self.output[-4000:])
        return "\n".join(lines)


def parse_results(payload: Mapping[str, object]) -> tuple[dict[str, HostSummary], list[str]]:
    """Per-host summary and failed hosts from pyinfra's ``--json`` payload."""
    hosts: dict[str, HostSummary] = {}
    results = payload.get("results")
    if not isinstance(results, Mapping):
        return hosts, []
    for op in results.get("operations", []) or []:
        name = str(op.get("name", "?"))
        for h in op.get("success", []):
            hosts.setdefault(h, HostSummary()).changed.append(name)
        for h in op.get("error", []):
            hosts.setdefault(h, HostSummary()).errors.append(name)
        for h in op.get("no_change", []):
            hosts.setdefault(h, HostSummary()).no_change += 1
    failed = [str(h) for h in results.get("failed_hosts", []) or []]
    for h in failed:
        hosts.setdefault(h, HostSummary())
    return hosts, failed


def _extract_json(stdout: str) -> dict[str, object] | None:
    """The JSON document on stdout (tolerating stray lines before it)."""
    start = stdout.find("{")
    while start >= 0:
        try:
            obj = json.loads(stdout[start:])
        except json.JSONDecodeError:
            start = stdout.find("\n{", start + 1)
            start = start + 1 if start >= 0 else -1
            continue
        return obj if isinstance(obj, dict) else None
    return None


def pyinfra_bin() -> str:
    """The ``pyinfra`` next to this interpreter (the project's venv), else from PATH."""
    cand = Path(sys.executable).with_name("pyinfra")
    return str(cand) if cand.exists() else "pyinfra"


def run_pyinfra(
    inventory: Path | str,
    *operations: str | Path,
    data: Mapping[str, object] | None = None,
    extra_args: Sequence[str] = (),
    limit: str | None = None,
    timeout: float | None = 1800,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> PyinfraResult:
    """``pyinfra -y --json INVENTORY OPERATIONS... [--data k=v]...``; never raises on rc != 0.

    ``prefix`` runs it through a wrapper, e.g. ``("ip", "netns", "exec", NAME)``.
    """
    cmd = [*prefix, pyinfra_bin(), "-y", "--json"]
    for k, v in (data or {}).items():
        cmd += ["--data", f"{k}={v}"]
    if limit:
        cmd += ["--limit", limit]
    cmd += [*extra_args, str(inventory), *map(str, operations)]
    run_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=run_env, check=False)
    seconds = time.monotonic() - t0
    payload = _extract_json(proc.stdout)
    hosts, failed = parse_results(payload) if payload else ({}, [])
    return PyinfraResult(proc.returncode, proc.stdout, proc.stderr, seconds, hosts, failed,
                         payload)
