"""Ollama on a real Debian 12 guest: the real deploy, run with the pyinfra CLI over SSH.

The stand-in releases (``tests/fixtures/ollama_release.py``) are served from this machine on
loopback and reached by the guest at ``10.0.2.2``; the product only sees its
``ollama_download_base`` setting pointing there. Versions are ones gpulab's checksum table
does not list, so the release's ``sha256sum.txt`` is what verifies them.

The tests share one guest and build on each other, in order (fresh install, no-change rerun,
upgrade, bad checksum, LAN exposure); a session ``fleet`` fixture is used when the suite has
one, otherwise this module boots its own single guest.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpulab.lab.render import LOOPBACK
from tests.fixtures.http_server import StaticServer
from tests.fixtures.ollama_release import ReleaseAsset, build_release
from tests.fleet import FleetUnderTest
from tests.integration.outcomes import assert_ready, assert_unchanged, verify
from tests.phases import record_phase, timed
from tests.pyinfra_run import PyinfraResult, run_pyinfra

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "ollama.py"
OLD, NEW, BAD = "0.33.0", "0.33.1", "0.33.2"


@dataclass
class Lab:
    """One guest, the release server and a way to run the deploy with extra data."""

    fleet: FleetUnderTest
    name: str
    server: StaticServer
    releases: dict[str, ReleaseAsset]
    tmp: Path

    def sh(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run ``command`` as root on the guest (OpenSSH with the fleet's pinned keys)."""
        proc = subprocess.run(
            ["ssh", "-F", str(self.fleet.ssh_config), self.name, command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        return proc.returncode, proc.stdout + proc.stderr

    def out(self, command: str, timeout: float = 60) -> str:
        rc, text = self.sh(command, timeout)
        assert rc == 0, f"{command}: rc={rc}\n{text}"
        return text.strip()

    def deploy(self, label: str, **data: Any) -> PyinfraResult:
        """The single-stage Ollama deploy with ``data`` on top of the lab defaults."""
        guest = self.fleet.guests[self.name]
        host_data = {
            "ssh_hostname": LOOPBACK, "ssh_port": guest.port, "ssh_user": "root",
            "ssh_key": str(self.fleet.ssh_key),
            "ssh_known_hosts_file": str(self.fleet.known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "ollama_download_base": self.server.guest_url,
            # deploy/ollama.py installs no course models: verify must not expect any here
            "models": [],
            **data,
        }
        inventory = self.tmp / f"inventory-{label}.py"
        inventory.write_text(f"lab = [({self.name!r}, {host_data!r})]\n")
        result = run_pyinfra(inventory, DEPLOY, cwd=REPO, timeout=600)
        record_phase(f"ollama: {label} (rc {result.rc})", result.seconds)
        return result

    def api(self, path: str, address: str = "127.0.0.1") -> Any:
        return json.loads(self.out(f"curl -fsS --max-time 5 http://{address}:11434{path}"))

    def listeners(self) -> list[str]:
        """Local addresses listening on Ollama's port (``ss``'s fourth column)."""
        return self.out("ss -ltnH 'sport = :11434' | awk '{print $4}'").split()

    def client_namespace(self) -> None:
        """A second machine inside the guest: netns ``client`` behind a veth pair.

        Its packets arrive on ``veth-gl`` (not ``lo``) from 10.99.0.2 and fd99::2, so they
        meet every input chain (gpulab's table, ufw's) as a LAN client's would.
        """
        self.out(
            "ip netns list | grep -qw client || {"
            " ip netns add client && ip link add veth-gl type veth peer name veth-cl netns client"
            " && ip addr add 10.99.0.1/24 dev veth-gl && ip -6 addr add fd99::1/64 dev veth-gl"
            " nodad && ip link set veth-gl up && ip -n client link set lo up"
            " && ip -n client addr add 10.99.0.2/24 dev veth-cl"
            " && ip -n client -6 addr add fd99::2/64 dev veth-cl nodad"
            " && ip -n client link set veth-cl up; }"
        )

    def reachable_from_client(self) -> dict[str, bool]:
        """Whether the netns client reaches Ollama over IPv4 and over IPv6."""
        return {
            family: self.sh("ip netns exec client curl -sS -g -o /dev/null --max-time 3"
                            f" http://{address}:11434/api/version")[0] == 0
            for family, address in (("ipv4", "10.99.0.1"), ("ipv6", "[fd99::1]"))
        }

    def starts(self) -> int:
        """How many times systemd has started ollama.service on this boot."""
        _, text = self.sh("journalctl -b -u ollama.service --no-pager -o cat")
        return sum(1 for line in text.splitlines() if line.startswith("Started ollama"))

    def wait_api(self, version: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rc, text = self.sh("curl -fsS --max-time 3 http://127.0.0.1:11434/api/version")
            if rc == 0 and json.loads(text).get("version") == version:
                return
            time.sleep(1)
        status = self.sh("systemctl status ollama --no-pager")[1]
        raise AssertionError(f"Ollama {version} did not answer:\n{status}")


@pytest.fixture(scope="module")
def lab(fleet: FleetUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("ollama-lab")
    with StaticServer(tmp / "www") as server:
        releases = {v: build_release(server.root, v) for v in (OLD, NEW)}
        releases[BAD] = build_release(server.root, BAD, corrupt=True)
        name = "lab-02"  # the suite's scratch guest (conftest's clean_guest default)
        try:
            yield Lab(fleet, name, server, releases, tmp)
        finally:
            fleet.hand_back_clean(name, "ollama")


def test_fresh_install_runs_as_ollama_on_loopback_with_the_drop_in(lab: Lab) -> None:
    result = lab.deploy("fresh", ollama_version=OLD, ollama_keep_alive="10m",
                        ollama_num_parallel=2, ollama_kv_cache_type="q8_0",
                        ollama_flash_attention=True)
    assert result.rc == 0, result.describe()
    lab.wait_api(OLD)
    assert lab.out("systemctl is-active ollama") == "active"
    assert lab.out("systemctl is-enabled ollama") == "enabled"
    pid = lab.out("systemctl show -p MainPID --value ollama")
    assert lab.out(f"ps -o user= -p {pid}") == "ollama"
    assert lab.listeners() == ["127.0.0.1:11434"]
    env = lab.api("/api/stub/env")
    assert env["user"] == "ollama"
    seen = env["env"]
    assert seen["OLLAMA_HOST"] == "127.0.0.1:11434"
    assert seen["OLLAMA_MODELS"] == "/usr/share/ollama/.ollama/models"
    assert seen["OLLAMA_KEEP_ALIVE"] == "10m" and seen["OLLAMA_NUM_PARALLEL"] == "2"
    assert seen["OLLAMA_KV_CACHE_TYPE"] == "q8_0" and seen["OLLAMA_FLASH_ATTENTION"] == "1"
    assert not any(key.upper() == "HTTP_PROXY" for key in seen)
    assert lab.out("readlink /usr/local/bin/ollama") == f"/opt/ollama/{OLD}/bin/ollama"
    assert lab.out("stat -c %U /usr/share/ollama/.ollama/models") == "ollama"
    assert lab.server.count(f"/{lab.releases[OLD].url_path}", "GET") == 1
    assert lab.starts() == 1


def test_second_run_changes_nothing(lab: Lab) -> None:
    result = lab.deploy("rerun", ollama_version=OLD, ollama_keep_alive="10m",
                        ollama_num_parallel=2, ollama_kv_cache_type="q8_0",
                        ollama_flash_attention=True)
    assert_unchanged(result, [lab.name])
    assert lab.server.count(f"/{lab.releases[OLD].url_path}", "GET") == 1
    assert lab.starts() == 1


def test_version_bump_upgrades_in_place_and_restarts_once(lab: Lab) -> None:
    lab.out("install -d -o ollama -g ollama /usr/share/ollama/.ollama/models/blobs"
            " && touch /usr/share/ollama/.ollama/models/blobs/kept")
    # An older tree left from before OLD: the upgrade keeps NEW and OLD (to go back to) only.
    lab.out("mkdir -p /opt/ollama/0.32.0/bin && echo 0 > /opt/ollama/0.32.0/.gpulab-sha256")
    result = lab.deploy("upgrade", ollama_version=NEW)
    assert result.rc == 0, result.describe()
    lab.wait_api(NEW)
    assert lab.starts() == 2, lab.sh("journalctl -b -u ollama --no-pager -o cat")[1]
    assert lab.out("readlink /usr/local/lib/ollama") == f"/opt/ollama/{NEW}/lib/ollama"
    assert lab.out("test -f /usr/share/ollama/.ollama/models/blobs/kept && echo kept") == "kept"
    assert lab.out("ls /opt/ollama").split() == [OLD, NEW]
    assert lab.api("/api/stub/env")["env"]["OLLAMA_KEEP_ALIVE"] == "5m"


def test_checksum_mismatch_fails_the_host_and_keeps_the_running_version(lab: Lab) -> None:
    result = lab.deploy("mismatch", ollama_version=BAD)
    assert result.rc != 0, result.describe()
    assert "sha256 mismatch" in result.output, result.describe()
    assert f"{lab.server.guest_url}/{lab.releases[BAD].url_path}" in result.output
    assert "ollama_sha256" in result.output
    assert lab.api("/api/version")["version"] == NEW
    assert lab.out("readlink /usr/local/bin/ollama") == f"/opt/ollama/{NEW}/bin/ollama"
    assert lab.out(f"test -e /opt/ollama/{BAD} || echo absent") == "absent"
    assert lab.starts() == 2


EXPOSED = {"ollama_version": NEW, "ollama_host": "0.0.0.0:11434"}
BLOCKED = {"ipv4": False, "ipv6": False}
CLIENT = ["10.99.0.2/32", "fd99::2/128"]


def test_lan_exposure_opens_the_port_only_to_allowed_clients(lab: Lab) -> None:
    lab.client_namespace()
    result = lab.deploy("expose-other", ollama_allowed_clients=["192.0.2.0/24"], **EXPOSED)
    assert result.rc == 0, result.describe()
    lab.wait_api(NEW)
    table = lab.out("nft list table inet gpulab_ollama")
    assert "192.0.2.0/24" in table and "drop" in table
    assert lab.listeners() == ["*:11434"]  # one dual-stack socket, as Go opens for 0.0.0.0
    assert lab.reachable_from_client() == BLOCKED
    assert lab.api("/api/version")["version"] == NEW  # loopback is always allowed


@pytest.mark.parametrize("flush", [
    "systemctl start nftables",  # not running yet: /etc/nftables.conf's "flush ruleset"
    "systemctl reload nftables",
    "systemctl restart nftables",
])
def test_nftables_start_reload_restart_keep_the_table(lab: Lab, flush: str) -> None:
    if flush == "systemctl start nftables":  # the start case proves something only from here
        assert lab.sh("systemctl is-active nftables")[1].strip() != "active"
    lab.out(flush)
    lab.wait_api(NEW)
    assert "tcp dport 11434" in lab.out("nft list table inet gpulab_ollama"), flush
    assert lab.reachable_from_client() == BLOCKED, flush


def test_flushed_ruleset_is_noticed_and_restored_by_a_rerun(lab: Lab) -> None:
    lab.out("nft flush ruleset")
    assert lab.reachable_from_client() == {"ipv4": True, "ipv6": True}  # what a flush does
    result = lab.deploy("restore-table", ollama_allowed_clients=["192.0.2.0/24"], **EXPOSED)
    assert result.rc == 0, result.describe()
    assert result.hosts[lab.name].changed == ["gpulab Ollama | Ollama firewall restored (its "
                                              "table was missing from the live ruleset)"]
    assert lab.reachable_from_client() == BLOCKED


def test_allowed_client_reaches_ollama_on_both_families(lab: Lab) -> None:
    result = lab.deploy("expose-client", ollama_allowed_clients=CLIENT, **EXPOSED)
    assert result.rc == 0, result.describe()
    lab.wait_api(NEW)
    assert lab.reachable_from_client() == {"ipv4": True, "ipv6": True}
    table = lab.out("nft list table inet gpulab_ollama")
    assert "10.99.0.2" in table and "fd99::2" in table
    assert lab.out("systemctl is-enabled gpulab-ollama-firewall") == "enabled"


def test_active_ufw_is_opened_to_the_allowed_clients(lab: Lab) -> None:
    lab.client_namespace()
    with timed("ollama: install and enable ufw on the guest"):
        lab.out("apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive"
                " apt-get install -y -q ufw >/dev/null"
                " && ufw allow 22/tcp && ufw --force enable", timeout=600)
    # ufw's own input chain drops what gpulab's table accepted.
    assert lab.reachable_from_client() == BLOCKED
    result = lab.deploy("expose-ufw", ollama_allowed_clients=CLIENT, **EXPOSED)
    assert result.rc == 0, result.describe()
    assert lab.reachable_from_client() == {"ipv4": True, "ipv6": True}
    assert "gpulab-ollama" in lab.out("ufw status")
    rerun = lab.deploy("expose-ufw-rerun", ollama_allowed_clients=CLIENT, **EXPOSED)
    assert rerun.changed_hosts == [], rerun.describe()


def test_loopback_again_removes_table_and_ufw_rules(lab: Lab) -> None:
    result = lab.deploy("loopback-again", ollama_version=NEW)
    assert result.rc == 0, result.describe()
    rc, _ = lab.sh("nft list table inet gpulab_ollama")
    assert rc != 0, "the firewall table stays after exposure is turned off"
    assert "gpulab-ollama" not in lab.out("ufw status")
    assert lab.out("test -e /etc/systemd/system/nftables.service.d/gpulab-ollama.conf"
                   " || echo gone") == "gone"
    lab.wait_api(NEW)
    assert lab.listeners() == ["127.0.0.1:11434"]
    # and gpulab verify, from the same inventory, finds the host ready
    assert_ready(verify(lab.tmp / "inventory-loopback-again.py", label="ollama lab"), [lab.name])
