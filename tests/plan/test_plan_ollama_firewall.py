"""Ollama's LAN firewall against the ways it can vanish or be overruled on a real host.

nftables.service flushes the whole ruleset when it starts or reloads; ufw and firewalld add
their own base chains that drop what gpulab's table accepts. Each test plans the real deploy
on a ``@fake`` host with canned answers for the facts involved.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.plan.harness import PlannedHost
from tests.plan.test_plan_ollama import _plan

pytestmark = pytest.mark.plan

EXPOSED = {"ollama_host": "0.0.0.0:11434", "ollama_allowed_clients": ["10.0.0.0/24", "fd00::/8"]}
LIVE_TABLE = re.compile(r"nft list table inet gpulab_ollama")
FIREWALLS = re.compile(r"ufw status .*firewall-cmd --state")
UFW_ADDED = re.compile(r"ufw show added")
TABLE_TEXT = """table inet gpulab_ollama {
	chain input {
		type filter hook input priority filter - 10; policy accept;
		ip saddr 127.0.0.0/8 tcp dport 11434 accept
		ip6 saddr ::1 tcp dport 11434 accept
		ip saddr 10.0.0.0/24 tcp dport 11434 accept
		ip6 saddr fd00::/8 tcp dport 11434 accept
		tcp dport 11434 counter packets 3 bytes 180 drop
	}
}"""


def _exposed(responses: dict[Any, Any], data: dict[str, Any] | None = None) -> PlannedHost:
    return _plan("ubuntu2404-rtx5090.json", {**EXPOSED, **(data or {})}, responses)


def test_unit_follows_nftables_reloads_and_restarts() -> None:
    unit = _exposed({}).op("Ollama firewall unit").text
    assert "PartOf=nftables.service" in unit
    assert "ReloadPropagatedFrom=nftables.service" in unit
    assert "ExecReload=/usr/sbin/nft -f /etc/gpulab/ollama.nft" in unit


def test_nftables_start_reloads_the_table_through_a_drop_in() -> None:
    dropin = _exposed({}).op("nftables reloads Ollama's firewall").text
    assert "upload /etc/systemd/system/nftables.service.d/gpulab-ollama.conf" in dropin
    assert "ExecStartPost=/usr/sbin/nft -f /etc/gpulab/ollama.nft" in dropin


def test_table_missing_from_the_live_ruleset_is_restored() -> None:
    planned = _exposed({LIVE_TABLE: ""})
    assert "Ollama firewall restored" in " ".join(planned.names())


def test_table_with_a_missing_network_is_restored() -> None:
    planned = _exposed({LIVE_TABLE: TABLE_TEXT.replace("fd00::/8", "fd01::/16")})
    assert "Ollama firewall restored" in " ".join(planned.names())


def test_live_table_as_loaded_needs_no_restore() -> None:
    planned = _exposed({LIVE_TABLE: TABLE_TEXT.splitlines()})
    assert "Ollama firewall restored" not in " ".join(planned.names())


def test_active_ufw_gets_the_allowed_networks() -> None:
    planned = _exposed({FIREWALLS: "ufw", UFW_ADDED: ["ufw allow 22/tcp"]})
    ufw = planned.op("ufw: port 11434").text.splitlines()
    assert ufw == [
        "ufw allow from 10.0.0.0/24 to any port 11434 proto tcp comment gpulab-ollama",
        "ufw allow from fd00::/8 to any port 11434 proto tcp comment gpulab-ollama",
    ]


def test_ufw_rules_follow_a_changed_network_and_leave_the_users_alone() -> None:
    planned = _exposed({FIREWALLS: "ufw", UFW_ADDED: [
        "ufw allow 22/tcp",
        "ufw allow from 10.0.0.0/24 to any port 11434 proto tcp comment 'gpulab-ollama'",
        "ufw allow from 192.0.2.0/24 to any port 11434 proto tcp comment 'gpulab-ollama'",
    ]})
    assert planned.op("ufw: port 11434").text.splitlines() == [
        "ufw delete allow from 192.0.2.0/24 to any port 11434 proto tcp comment gpulab-ollama",
        "ufw allow from fd00::/8 to any port 11434 proto tcp comment gpulab-ollama",
    ]


def test_loopback_again_removes_gpulabs_ufw_rules() -> None:
    planned = _plan("ubuntu2404-rtx5090.json", None, {FIREWALLS: "ufw", UFW_ADDED: [
        "ufw allow from 10.0.0.0/24 to any port 11434 proto tcp comment 'gpulab-ollama'",
    ]})
    assert planned.op("ufw: port 11434").text == (
        "ufw delete allow from 10.0.0.0/24 to any port 11434 proto tcp comment gpulab-ollama")


def test_active_firewalld_refuses_the_host_before_any_change() -> None:
    planned = _exposed({FIREWALLS: "firewalld"})
    assert planned.names() == ["gpulab Ollama | Ollama on the LAN: firewalld is active"]
