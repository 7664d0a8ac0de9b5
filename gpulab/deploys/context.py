"""What one run has learned about each host: settings, facts, plan, and operations to follow.

The whole inventory's settings are validated the first time any host asks, so one bad value
anywhere stops the run before any host is changed. Everything is kept per pyinfra ``State``
(one run) in a ``HostRun`` per host, read through the typed functions below, so a deploy that
needs what an earlier one did (the driver's operations, the NVIDIA repository's) says so in
its signature instead of reading attributes hung on pyinfra's objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from pyinfra.api.exceptions import ConnectError, PyinfraError
from pyinfra.api.operation import OperationMeta
from pyinfra.connectors.fake import FakeConnector

from gpulab.facts.gather import FactsInOneCommand, gather_host_facts, stand_in_facts
from gpulab.facts.model import FactsFile, HostFacts
from gpulab.models.store import seeded_source
from gpulab.plan.host import HostPlan, PlanError, make_plan
from gpulab.settings import Settings, SettingsError, parse_inventory_settings

# Data key for a dry run against a recorded machine (``gpulab facts`` output), valid only on
# pyinfra's ``@fake`` connector (checked with the other settings): the plan is made from the
# file instead of from the host.
RECORDED_FACTS_KEY = "gpulab_recorded_facts"
# The same file on a real rehearsal guest: deployed for real, planned as the recorded machine.
STAND_IN_FACTS_KEY = "gpulab_stand_in_facts"


class GpulabDataError(PyinfraError):
    """Inventory data gpulab cannot act on; raised before any operation runs."""


@dataclass
class HostRun:
    """One host in one run.

    ``driver_ops`` are the operations that installed or upgraded the driver (a change means
    "reboot, restart Ollama"); ``nvidia_repo_ops`` the ones that set NVIDIA's repository up,
    ``None`` until a deploy has done so in this run.
    """

    settings: Settings
    facts: HostFacts | None = None
    plan: HostPlan | None = None
    driver_ops: list[OperationMeta] = field(default_factory=list)
    nvidia_repo_ops: list[OperationMeta] | None = None


_RUNS: WeakKeyDictionary[Any, dict[str, HostRun]] = WeakKeyDictionary()


def _inventory_runs(state: Any) -> dict[str, HostRun]:
    runs = _RUNS.get(state)
    if runs is None:
        hosts = [(host.name, host.data.dict()) for host in state.inventory]
        try:
            settings = parse_inventory_settings(hosts)
        except SettingsError as error:
            message = f"inventory data is invalid, nothing was changed:\n{error}"
            raise GpulabDataError(message) from None
        runs = {name: HostRun(settings=value) for name, value in settings.items()}
        _RUNS[state] = runs
    return runs


def host_run(host: Any) -> HostRun:
    """This host's record for the current run (validating every host's data on first use)."""
    return _inventory_runs(host.state)[host.name]


def host_settings(host: Any) -> Settings:
    """This host's validated settings."""
    return host_run(host).settings


def host_facts(host: Any) -> HostFacts:
    """This host's facts as the run found them, read once per run (pyinfra runs a fact's
    command again at every ``get_fact``, and several deploys ask for them)."""
    run = host_run(host)
    if run.facts is None:
        run.facts = _read_facts(host, run.settings)
    return run.facts


def _read_facts(host: Any, settings: Settings) -> HostFacts:
    """Gathered live, or read from a recorded file (a dry run on ``@fake``, or a rehearsal
    guest standing in for another machine)."""
    if settings.gpulab_recorded_facts is not None:
        facts = FactsFile.model_validate_json(
            Path(settings.gpulab_recorded_facts).read_text()).facts
        _answer_as_recorded(host, facts)
        return facts
    if settings.gpulab_stand_in_facts is not None:
        recorded = FactsFile.model_validate_json(
            Path(settings.gpulab_stand_in_facts).read_text()).facts
        facts = stand_in_facts(recorded, host, settings.ollama_models_dir)
    else:
        models_dir = settings.ollama_models_dir
        facts = gather_host_facts(FactsInOneCommand(host, models_dir), models_dir)
    if host in host.state.failed_hosts:
        # pyinfra turns a connection that fails inside a fact (SSHException, a timeout) into
        # the fact's default and marks the host failed: these facts describe no machine.
        raise ConnectError(f"{host.name}: the connection failed while gpulab gathered its "
                           "facts")
    return facts


def _answer_as_recorded(host: Any, facts: HostFacts) -> None:
    """Let pyinfra's own facts on this ``@fake`` host see the recorded machine.

    The fake connector answers every command with nothing, so pyinfra's ``Os`` fact is None
    and ``server.group`` fails; these are the few answers the deploys need. Answers in the
    host's own ``fake_responses`` come first and win.
    """
    if not isinstance(host.connector, FakeConnector):
        return
    answers: dict[Any, Any] = {
        "uname -s": "Linux",
        "uname -m": facts.arch,
        re.compile(r"command -v \S*(useradd|groupadd)"): "/usr/sbin/useradd",
    }
    data = host.connector.data
    data["fake_responses"] = {**(data.get("fake_responses") or {}), **answers}


def host_plan(host: Any) -> HostPlan:
    """This host's plan, made once per run."""
    run = host_run(host)
    if run.plan is None:
        try:
            run.plan = make_plan(host.name, host_facts(host), run.settings,
                                 seeded_source(run.settings))
        except PlanError as error:
            raise GpulabDataError(f"{error}\nnothing was changed") from None
    return run.plan
