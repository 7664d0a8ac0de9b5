"""The room's verdict: the JSON document, the exit status, the terminal table and the HTML page.

Pure: outcomes in, text out. The JSON document is the single format; the table and the page
are drawn from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from gpulab.verify.probes import CHECK_NAMES, REACHABLE

Report = dict[str, list[dict[str, Any]]]
EXIT_READY, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 2


def build_report(rows: Sequence[Mapping[str, str]], hosts: Sequence[str]) -> Report:
    """``{"hosts": [{"name", "ready", "checks": [{"name", "status", "message"}]}]}``.

    ``rows`` are single outcomes (``host``, ``check``, ``status``, ``message``) in any order;
    checks come out in the table's order, and a check with no outcome (its test never ran) is
    a failure, never a silent gap.
    """
    by_host: dict[str, dict[str, Mapping[str, str]]] = {name: {} for name in hosts}
    for row in rows:
        by_host.setdefault(row["host"], {})[row["check"]] = row
    out = []
    for name, found in by_host.items():
        checks = []
        for check in CHECK_NAMES:
            outcome = found.get(check)
            if outcome is None:
                checks.append({"name": check, "status": "fail",
                               "message": "not verified: its test did not run (see pytest's "
                                          "output). Fix: run gpulab verify again"})
            else:
                checks.append({"name": check, "status": outcome["status"],
                               "message": outcome["message"]})
        ready = all(check["status"] != "fail" for check in checks)
        out.append({"name": name, "ready": ready, "checks": checks})
    return {"hosts": out}


def unreachable_hosts(report: Report) -> list[str]:
    """Hosts whose first check, reaching them, failed."""
    return [host["name"] for host in report["hosts"]
            if any(c["name"] == REACHABLE and c["status"] == "fail" for c in host["checks"])]


def exit_status(report: Report) -> int:
    """0 every host ready, 2 a host could not be reached, else 1 when any check failed."""
    if unreachable_hosts(report):
        return EXIT_UNREACHABLE
    return EXIT_READY if all(host["ready"] for host in report["hosts"]) else EXIT_FAILED


def _ordered(report: Report) -> list[dict[str, Any]]:
    """Unreachable hosts first, then the others in inventory order."""
    lost = set(unreachable_hosts(report))
    return sorted(report["hosts"], key=lambda host: host["name"] not in lost)


LABELS = {"pass": "pass", "fail": "FAIL", "n/a": "n/a"}
STYLES = {"pass": "green", "fail": "bold red", "n/a": "dim"}


def render_terminal(report: Report, console: Any) -> None:
    """Checks down, hosts across, then each failure's cause and fix (a ``rich`` console)."""
    from rich.table import Table

    hosts = _ordered(report)
    table = Table(title="gpulab verify", show_lines=False)
    table.add_column("check")
    for host in hosts:
        mark = "ready" if host["ready"] else "NOT READY"
        table.add_column(f"{host['name']}\n{mark}", justify="center")
    for index, check in enumerate(CHECK_NAMES):
        cells = []
        for host in hosts:
            status = host["checks"][index]["status"]
            cells.append(f"[{STYLES[status]}]{LABELS[status]}[/]")
        table.add_row(check, *cells)
    console.print(table)
    for host in hosts:
        for check in host["checks"]:
            if check["status"] == "fail":
                console.print(f"[bold red]{host['name']}[/]: {check['name']} "
                              f"{check['message']}", markup=True, highlight=False)
    lost = unreachable_hosts(report)
    if lost:
        console.print(f"[bold red]unreachable, not verified: {', '.join(lost)}[/]")


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fff;color:#111}
h1{font-size:1.4rem} .summary{margin:.5rem 0 1rem}
table{border-collapse:collapse} th,td{border:1px solid #bbb;padding:.25rem;vertical-align:top}
th.check{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;max-height:16rem;
font-size:.8rem;text-align:left}
th.host{text-align:left;white-space:nowrap} td{min-width:3rem;text-align:center}
td.pass{background:#2e9d46;color:#fff} td.fail{background:#c8202f;color:#fff}
td.na{background:#c9c9c9;color:#333}
tr.unreachable th.host{color:#c8202f}
details summary{cursor:pointer;font-weight:bold}
details p{text-align:left;max-width:28rem;font-size:.85rem;margin:.3rem 0 0}
"""


def render_html(report: Report) -> str:
    """One self-contained page (no scripts, no external assets) for the projector.

    Hosts down (unreachable ones on top), checks across; each cell is green, red or grey,
    and opens to its message (cause and fix) with one click.
    """
    hosts = _ordered(report)
    lost = set(unreachable_hosts(report))
    ready = sum(1 for host in hosts if host["ready"])
    head = "".join(f'<th class="check" scope="col">{escape(name)}</th>' for name in CHECK_NAMES)
    body = []
    for host in hosts:
        row_class = "unreachable" if host["name"] in lost else ("ready" if host["ready"]
                                                                 else "not-ready")
        state = "UNREACHABLE" if host["name"] in lost else ("ready" if host["ready"]
                                                             else "NOT READY")
        cells = []
        for check in host["checks"]:
            status = check["status"]
            css = "na" if status == "n/a" else status
            cells.append(
                f'<td class="{css}" data-host="{escape(host["name"])}" '
                f'data-check="{escape(check["name"])}" data-status="{escape(status)}" '
                f'title="{escape(check["name"])}"><details><summary>{LABELS[status]}</summary>'
                f'<p>{escape(check["message"])}</p></details></td>'
            )
        body.append(f'<tr class="{row_class}"><th class="host" scope="row">'
                    f'{escape(host["name"])}<br><small>{state}</small></th>{"".join(cells)}</tr>')
    summary = f"{ready} of {len(hosts)} host(s) ready"
    if lost:
        summary += f"; unreachable: {', '.join(sorted(lost))}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>gpulab verify</title>"
        f"<style>{_CSS}</style></head><body><h1>gpulab verify</h1>"
        f'<p class="summary">{escape(summary)}</p>'
        f'<table><thead><tr><th scope="col">host</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></body></html>\n"
    )
