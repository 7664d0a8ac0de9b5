"""``gpulab``: the toolkit's command line. Thin: every decision lives in the package."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpulab.compat.cuda import CompatError, check_pinned_toolkit, choose_toolkit
from gpulab.compat.versions import VersionError
from gpulab.facts.model import FactsFile, HostFacts
from gpulab.models.store import seeded_source
from gpulab.plan.host import HostPlan, PlanError, make_plan
from gpulab.settings import Settings, SettingsError, parse_inventory_settings


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def cmd_compat(args: argparse.Namespace) -> int:
    """The CUDA toolkit a driver runs (Table 3 of the CUDA release notes)."""
    try:
        if args.toolkit:
            toolkit = check_pinned_toolkit(args.toolkit, args.driver, args.platform)
        else:
            toolkit = choose_toolkit(args.driver, args.platform)
    except (CompatError, VersionError) as error:
        print(f"gpulab compat: {error}", file=sys.stderr)
        return 1
    result = {
        "driver": args.driver, "platform": args.platform, "toolkit": toolkit.version,
        "package": toolkit.package, "apt_version": toolkit.apt_version,
        "min_driver": toolkit.min_driver, "prefix": toolkit.prefix,
    }
    if args.json:
        _print_json(result)
    else:
        print(f"CUDA {toolkit.version} ({toolkit.package}={toolkit.apt_version}): needs driver "
              f">= {toolkit.min_driver} ({args.platform}); driver {args.driver} has it")
    return 0


def inventory_settings(inventory: str, limit: list[str] | None) -> dict[str, Settings]:
    from gpulab.inventory import host_data, load_state

    state = load_state(inventory, limit)
    hosts = [(name, data) for name, data in host_data(state) if not limit or name in limit]
    return parse_inventory_settings(hosts)


def cmd_check(args: argparse.Namespace) -> int:
    """Validate every host's data without connecting."""
    try:
        settings = inventory_settings(args.inventory, None)
    except SettingsError as error:
        if args.json:
            _print_json({"valid": False, "problems": [
                {"host": p.host, "field": p.field, "message": p.message} for p in error.problems
            ]})
        else:
            for problem in error.problems:
                print(problem)
        return 1
    if args.json:
        _print_json({"valid": True, "hosts": sorted(settings)})
    else:
        print(f"{args.inventory}: {len(settings)} host(s), data valid")
    return 0


def _read_facts_files(paths: Sequence[str]) -> dict[str, HostFacts]:
    facts: dict[str, HostFacts] = {}
    for path in paths:
        candidates = sorted(Path(path).glob("*.json")) if Path(path).is_dir() else [Path(path)]
        for candidate in candidates:
            recorded = FactsFile.model_validate_json(candidate.read_text())
            facts[recorded.host] = recorded.facts
    return facts


LOG_FILE = Path(".gpulab") / "gpulab.log"


@contextmanager
def _pyinfra_logs(debug: bool) -> Iterator[str]:
    """pyinfra's and paramiko's messages (tracebacks too) go to ``.gpulab/gpulab.log``.

    With ``--debug`` they stay on stderr instead. Yields the hint for gpulab's own lines.
    """
    if debug:
        logging.basicConfig(level=logging.DEBUG)
        yield "see the messages above"
        return
    LOG_FILE.parent.mkdir(exist_ok=True)
    handler = logging.FileHandler(LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(name) for name in ("pyinfra", "paramiko", "gpulab")]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.handlers, lg.propagate = [handler], False
        lg.setLevel(logging.DEBUG)
    try:
        yield f"details in {LOG_FILE} (or run with --debug)"
    finally:
        for lg, (handlers, propagate, level) in zip(loggers, saved, strict=True):
            lg.handlers, lg.propagate, lg.level = handlers, propagate, level
        handler.close()


def _models_dir(data: Any) -> str:
    """The host's ``ollama_models_dir`` (its data is validated before any host is reached)."""
    return str(data.get("ollama_models_dir") or Settings.model_fields["ollama_models_dir"].default)


def _gather_live(
    inventory: str, limit: list[str] | None, debug: bool = False
) -> tuple[dict[str, HostFacts], dict[str, str]]:
    """Facts of every reachable host; one problem line for each host that is not."""
    from pyinfra.api.exceptions import PyinfraError

    from gpulab.deploys.common import LOST_CONNECTION
    from gpulab.facts.gather import FactsInOneCommand, gather_host_facts
    from gpulab.inventory import connected, load_state

    state = load_state(inventory, limit)
    facts: dict[str, HostFacts] = {}
    problems: dict[str, str] = {}
    log = logging.getLogger("gpulab")
    with _pyinfra_logs(debug) as hint, connected(state) as answered:
        for name, reason in answered.unreachable.items():
            problems[name] = (f"{name}: host: unreachable ({reason}); check that it is on and "
                              f"that its ssh_hostname, ssh_port and ssh_user reach sshd; {hint}")
        for host in answered.hosts:
            # A PC that powers off now fails alone; pyinfra marks it failed (and says "No hosts
            # remaining!" when it was the last one) or the connection raises.
            try:
                models_dir = _models_dir(host.data)
                gathered = gather_host_facts(FactsInOneCommand(host, models_dir), models_dir)
            except (*LOST_CONNECTION, PyinfraError) as error:
                log.exception("%s: gathering facts failed", host.name)
                gathered, why = None, f"{type(error).__name__}: {error}"
            else:
                why = "the connection dropped"
            if gathered is None or host in state.failed_hosts:
                problems[host.name] = (f"{host.name}: host: lost while its facts were gathered "
                                       f"({why}); check that it is still on, then run again; "
                                       f"{hint}")
            else:
                facts[host.name] = gathered
    return facts, problems


def _via(plan: HostPlan, *routes: str) -> str:
    """`` (via room cache 10.0.0.5)`` on a line whose bytes come through the cache."""
    through = any(route in plan.via_room_cache for route in routes)
    return f" (via room cache {plan.room_cache})" if through else ""


def _plan_row(plan: HostPlan) -> str:
    driver = (f"{plan.driver.source} {plan.driver.branch} {plan.driver.flavour}"
              if plan.driver.source else "none")
    driver_route = "nvidia" if plan.driver.source == "cuda-repo" else "apt"
    lines = [
        f"{plan.host}  [{plan.platform}]  gpus: {', '.join(plan.gpus) or 'none'}",
        f"  driver:  {driver} — {plan.driver.reason}"
        + (_via(plan, driver_route) if plan.driver.source else ""),
        *([f"  driver packages: {' '.join(plan.driver.packages)}"] if plan.driver.packages
          else []),
        f"  cuda:    {plan.toolkit.version or 'none'} — {plan.toolkit.reason}"
        + (_via(plan, "nvidia") if plan.toolkit.version else ""),
        *([f"  cuda package: {plan.toolkit.package}={plan.toolkit.apt_version}"]
          if plan.toolkit.package else []),
        f"  ollama:  {plan.ollama.version} — {plan.ollama.reason}" + _via(plan, "ollama"),
        f"  reboot:  {'maybe' if plan.reboot.may_be_needed else 'no'} — {plan.reboot.reason}",
    ]
    lines += [f"  model:   {fit.name} — {fit.reason}"
              + (_via(plan, "models") if fit.action == "copy" else "") for fit in plan.models]
    if plan.vllm.enabled:
        lines += [f"  vllm:    {plan.vllm.requirement} — {plan.vllm.reason}",
                  f"  vllm:    serves {plan.vllm.model} on {plan.vllm.base_url}, "
                  f"--gpu-memory-utilization {plan.vllm.gpu_memory_utilization} "
                  f"--max-model-len {plan.vllm.max_model_len} — {plan.vllm.memory_reason}"]
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    """One plan per host, each decision with its reason."""
    try:
        settings = inventory_settings(args.inventory, args.limit)
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 1
    failed: dict[str, str] = {}
    if args.facts:
        facts = _read_facts_files(args.facts)
    else:
        # Dry-run hosts (@fake, validated above) and stand-in guests are planned from a file.
        facts = {name: FactsFile.model_validate_json(Path(path).read_text()).facts
                 for name, host_settings in settings.items()
                 if (path := host_settings.gpulab_recorded_facts
                     or host_settings.gpulab_stand_in_facts)}
        live = [name for name in settings if name not in facts]
        if live:
            gathered, failed = _gather_live(args.inventory, live, args.debug)
            facts |= gathered
    plans: list[HostPlan] = []
    problems = list(failed.values())
    for name, host_settings in settings.items():
        if name not in facts:
            if name not in failed:
                problems.append(f"{name}: facts: no recorded facts for this host")
            continue
        try:
            plans.append(make_plan(name, facts[name], host_settings,
                                   seeded_source(host_settings)))
        except PlanError as error:
            problems.append(str(error))
    if args.json:
        _print_json({"plans": [plan.model_dump(mode="json") for plan in plans],
                     "problems": problems})
    else:
        for plan in plans:
            print(_plan_row(plan))
        for problem in problems:
            print(problem, file=sys.stderr)
    return 1 if problems else 0


def cmd_facts(args: argparse.Namespace) -> int:
    """Record each host's facts, in the format ``gpulab plan --facts`` reads."""
    facts, failed = _gather_live(args.inventory, args.limit, args.debug)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, host_facts in sorted(facts.items()):
        path = out / f"{name}.json"
        path.write_text(FactsFile(host=name, facts=host_facts).model_dump_json(indent=2) + "\n")
        written.append(str(path))
    if args.json:
        _print_json({"written": written, "unreachable": sorted(failed)})
    else:
        for path_text in written:
            print(f"wrote {path_text}")
        for problem in failed.values():
            print(f"{problem}; no facts recorded", file=sys.stderr)
    return 1 if failed or not written else 0


def cmd_reference(args: argparse.Namespace) -> int:
    """The inventory data reference, from the settings models."""
    from gpulab.reference import data_reference, readme_table, update_readme

    if args.update:
        changed = update_readme(Path(args.update))
        print(f"{args.update}: data reference {'updated' if changed else 'already current'}")
    elif args.json:
        _print_json(data_reference())
    else:
        print(readme_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(prog="gpulab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    compat = commands.add_parser("compat", help="the CUDA toolkit a driver version runs")
    compat.add_argument("--driver", required=True, help="driver version, e.g. 560.35.03")
    compat.add_argument("--platform", choices=["linux", "windows"], default="linux",
                        help="windows: the driver version WSL2's nvidia-smi reports")
    compat.add_argument("--toolkit", help="check a pinned toolkit (12.6 or 12.6.2) instead")
    compat.add_argument("--json", action="store_true")
    compat.set_defaults(func=cmd_compat)

    check = commands.add_parser("check", help="validate every host's data, without connecting")
    check.add_argument("inventory")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_check)

    plan = commands.add_parser("plan", help="what each host gets, and why")
    plan.add_argument("inventory")
    plan.add_argument("--limit", action="append", help="only this host (repeatable)")
    plan.add_argument("--facts", action="append",
                      help="plan from recorded facts (a file or a folder of them) instead of "
                           "connecting (repeatable)")
    plan.add_argument("--json", action="store_true")
    plan.add_argument("--debug", action="store_true",
                      help="print pyinfra's and SSH's messages instead of logging them to "
                           ".gpulab/gpulab.log")
    plan.set_defaults(func=cmd_plan)

    facts = commands.add_parser("facts", help="record each host's facts for offline planning")
    facts.add_argument("inventory")
    facts.add_argument("--limit", action="append", help="only this host (repeatable)")
    facts.add_argument("--out", required=True, help="folder for <host>.json files")
    facts.add_argument("--json", action="store_true")
    facts.add_argument("--debug", action="store_true",
                       help="print pyinfra's and SSH's messages instead of logging them")
    facts.set_defaults(func=cmd_facts)

    reference = commands.add_parser("reference", help="the inventory data keys, their defaults "
                                    "and meanings (the README's table)")
    reference.add_argument("--json", action="store_true")
    reference.add_argument("--update", metavar="README",
                           help="rewrite the table between the README's markers")
    reference.set_defaults(func=cmd_reference)

    from gpulab.lab.commands import add_lab_parser
    from gpulab.models.commands import add_models_parser
    from gpulab.verify.command import add_verify_parser

    add_verify_parser(commands)
    add_lab_parser(commands)
    add_models_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpulab`` console script."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except Exception as error:  # a clear line, not a traceback, for expected failures
        from gpulab.inventory import InventoryError

        if isinstance(error, (InventoryError, OSError, ValueError)):
            print(f"gpulab {args.command}: {error}", file=sys.stderr)
            return 1
        raise
    return result


if __name__ == "__main__":
    sys.exit(main())
