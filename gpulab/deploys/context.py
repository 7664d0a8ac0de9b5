"""The settings, facts and plan of the host a deploy is running for, made once per host.

The whole inventory's settings are validated the first time any host asks, so one bad value
anywhere stops the run before any host is changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyinfra.api.exceptions import PyinfraError

from gpulab.facts import gather_host_facts
from gpulab.hostfacts import FactsFile, HostFacts
from gpulab.plan import HostPlan, PlanError, make_plan
from gpulab.settings import Settings, SettingsError, parse_inventory_settings

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

# Data key for a dry run against a recorded machine (``gpulab facts`` output), used with
# pyinfra's ``@fake`` connector: the plan is made from the file instead of from the host.
RECORDED_FACTS_KEY = "gpulab_recorded_facts"


class GpulabDataError(PyinfraError):
    """Inventory data gpulab cannot act on; raised before any operation runs."""


def template(name: str) -> str:
    """The path of a template under the repository's ``templates/``."""
    return str(TEMPLATES / name)


def _inventory_settings(state: Any) -> dict[str, Settings]:
    cached: dict[str, Settings] | None = getattr(state, "_gpulab_settings", None)
    if cached is None:
        hosts = [(host.name, host.data.dict()) for host in state.inventory]
        try:
            cached = parse_inventory_settings(hosts)
        except SettingsError as error:
            message = f"inventory data is invalid, nothing was changed:\n{error}"
            raise GpulabDataError(message) from None
        state._gpulab_settings = cached
    return cached


def host_settings(host: Any) -> Settings:
    """This host's validated settings (validating every host's on first use)."""
    return _inventory_settings(host.state)[host.name]


def host_facts(host: Any) -> HostFacts:
    """This host's facts: gathered live, or read from a recorded file for a dry run."""
    recorded = host.data.get(RECORDED_FACTS_KEY)
    if recorded is None:
        return gather_host_facts(host)
    return FactsFile.model_validate_json(Path(recorded).read_text()).facts


def host_plan(host: Any) -> HostPlan:
    """This host's plan, made once per run."""
    cached: HostPlan | None = getattr(host, "_gpulab_plan", None)
    if cached is None:
        try:
            cached = make_plan(host.name, host_facts(host), host_settings(host))
        except PlanError as error:
            raise GpulabDataError(f"{error}\nnothing was changed") from None
        host._gpulab_plan = cached
    return cached
