"""Facts about the Ollama install gpulab manages under ``/opt/ollama``; they read, never change.

    host.get_fact(OllamaVersionDirs)  # -> ["0.33.1", "0.34.2"]
"""

from __future__ import annotations

import shlex

from pyinfra.api.facts import FactBase

from gpulab.plan.ollama import MARKER, OPT_DIR


class OllamaVersionDirs(FactBase[list[str]]):
    """The versions unpacked side by side under ``/opt/ollama/`` (complete ones only)."""

    def command(self) -> str:
        opt = shlex.quote(OPT_DIR)
        return (f'for d in {opt}/*/; do [ -f "$d{MARKER}" ] && basename "$d"; done'
                " 2>/dev/null; true")

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


class NftTable(FactBase[str | None]):
    """The live ``nft list table <family> <table>`` listing, or None when there is no such table.

    Read every run: ``nft flush ruleset`` (by hand, or from ``/etc/nftables.conf``) removes
    the table while the oneshot unit that loaded it still says active.

    .. code:: python

        host.get_fact(NftTable, family="inet", table="gpulab_ollama")
    """

    def command(self, family: str, table: str) -> str:
        return (f"nft list table {shlex.quote(family)} {shlex.quote(table)} 2>/dev/null"
                " || true")

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        return "\n".join(output).strip() or None


class ActiveFirewalls(FactBase[list[str]]):
    """Other firewalls whose chains also judge incoming packets: ``ufw`` and ``firewalld``.

    An nftables ``accept`` ends only its own base chain (nft(8), "Overall evaluation of the
    ruleset"), so a port gpulab's table allows is still dropped by an active ufw or firewalld.

    .. code:: python

        host.get_fact(ActiveFirewalls)  # -> ["ufw"]
    """

    def command(self) -> str:
        return (
            "if command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null"
            " | grep -q '^Status: active'; then echo ufw; fi;"
            " if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state 2>/dev/null"
            " | grep -qx running; then echo firewalld; fi; true"
        )

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class UfwAddedRules(FactBase[list[str]]):
    """The rules added to ufw, as ``ufw show added`` prints them (``ufw allow ...``)."""

    def command(self) -> str:
        return "ufw show added 2>/dev/null | grep '^ufw ' || true"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]
