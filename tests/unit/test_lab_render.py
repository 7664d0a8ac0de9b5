"""Inventory, ssh_config and known_hosts the fleet writes, and pyinfra result parsing."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from gpulab.lab.render import (
    GuestAddr,
    render_inventory,
    render_known_hosts,
    render_ssh_config,
)
from tests.pyinfra_run import _extract_json, parse_results

pytestmark = pytest.mark.unit

GUESTS = [GuestAddr("lab-01", 40001), GuestAddr("lab-02", 40002)]
KEY = Path("/cache/id_ed25519")
KH = Path("/state/known_hosts")
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK4zWz6bQb0m2pZ2cZ9Q1nV2Jx8rVx5m8yQ7cT3q1m9N"


def test_inventory_is_python_with_ssh_data() -> None:
    ns: dict[str, object] = {}
    exec(render_inventory(GUESTS, KEY, KH), ns)
    assert ns["lab"] == [
        ("lab-01", {
            "ssh_hostname": "127.0.0.1", "ssh_port": 40001, "ssh_user": "root",
            "ssh_key": "/cache/id_ed25519", "ssh_known_hosts_file": "/state/known_hosts",
            "ssh_strict_host_key_checking": "yes", "ssh_connect_retries": 2,
        }),
        ("lab-02", {
            "ssh_hostname": "127.0.0.1", "ssh_port": 40002, "ssh_user": "root",
            "ssh_key": "/cache/id_ed25519", "ssh_known_hosts_file": "/state/known_hosts",
            "ssh_strict_host_key_checking": "yes", "ssh_connect_retries": 2,
        }),
    ]


def test_ssh_config_parses_per_alias() -> None:
    cfg = paramiko.SSHConfig.from_text(render_ssh_config(GUESTS, KEY, KH))
    two = cfg.lookup("lab-02")
    assert two["hostname"] == "127.0.0.1"
    assert two["port"] == "40002"
    assert two["user"] == "root"
    assert list(two["identityfile"]) == ["/cache/id_ed25519"]
    assert two["userknownhostsfile"] == "/state/known_hosts"
    assert two["stricthostkeychecking"] == "yes"
    assert two["hostkeyalias"] == "lab-02"
    assert cfg.lookup("elsewhere").get("port") is None


def test_known_hosts_has_exact_port_entries_paramiko_can_use(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(render_known_hosts(GUESTS, [HOST_KEY]))
    keys = paramiko.HostKeys(str(path))
    assert keys.lookup("[127.0.0.1]:40002") is not None
    assert keys.lookup("lab-01") is not None
    assert keys.lookup("[127.0.0.1]:22") is None


PAYLOAD = {
    "plan": [],
    "results": {
        "operations": [
            {"name": "a", "success": ["lab-01"], "error": [], "no_change": ["lab-02"]},
            {"name": "b", "success": [], "error": ["lab-02"], "no_change": ["lab-01"]},
        ],
        "totals": {},
        "failed_hosts": ["lab-02"],
    },
}


def test_parse_results_per_host() -> None:
    hosts, failed = parse_results(PAYLOAD)
    assert failed == ["lab-02"]
    assert hosts["lab-01"].changed == ["a"] and hosts["lab-01"].no_change == 1
    assert hosts["lab-02"].errors == ["b"] and hosts["lab-02"].changed == []


def test_extract_json_tolerates_noise() -> None:
    assert _extract_json('warning {not json\n{"results": null}\n') == {"results": None}
    assert _extract_json("no json at all") is None
    assert parse_results({"results": None}) == ({}, [])
