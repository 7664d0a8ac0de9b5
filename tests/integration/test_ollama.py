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

from gpulab.lab.fleet import Fleet
from gpulab.lab.pyinfra_run import PyinfraResult, run_pyinfra
from gpulab.lab.render import LOOPBACK
from tests.fixtures.http_server import StaticServer
from tests.fixtures.ollama_release import ReleaseAsset, build_release
from tests.integration.outcomes import assert_ready, assert_unchanged, verify
from tests.phases import record_phase, timed

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "ollama.py"
OLD, NEW, BAD = "0.33.0", "0.33.1", "0.33.2"


@dataclass
class Lab:
    """One guest, the release server and a way to run the deploy with extra data."""

    fleet: Fleet
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

    def out(self, command: str) -> str:
        rc, text = self.sh(command)
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
def lab(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("ollama-lab")
    with StaticServer(tmp / "www") as server:
        releases = {v: build_release(server.root, v) for v in (OLD, NEW)}
        releases[BAD] = build_release(server.root, BAD, corrupt=True)
        name = "lab-02"  # the suite's scratch guest (conftest's clean_guest default)
        try:
            yield Lab(fleet, name, server, releases, tmp)
        finally:
            with timed("ollama: hand lab-02 back clean (reset + boot)"):
                fleet.stop(name)
                fleet.reset(name)
                fleet.start(name)


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
    result = lab.deploy("upgrade", ollama_version=NEW)
    assert result.rc == 0, result.describe()
    lab.wait_api(NEW)
    assert lab.starts() == 2, lab.sh("journalctl -b -u ollama --no-pager -o cat")[1]
    assert lab.out("readlink /usr/local/lib/ollama") == f"/opt/ollama/{NEW}/lib/ollama"
    assert lab.out("test -f /usr/share/ollama/.ollama/models/blobs/kept && echo kept") == "kept"
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


def test_lan_exposure_opens_the_port_only_to_allowed_clients(lab: Lab) -> None:
    address = lab.out("ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1")
    probe = f"curl -sS -o /dev/null --max-time 3 http://{address}:11434/api/version"
    result = lab.deploy("expose-other", ollama_version=NEW, ollama_host="0.0.0.0:11434",
                        ollama_allowed_clients=["192.0.2.0/24"])
    assert result.rc == 0, result.describe()
    lab.wait_api(NEW)
    table = lab.out("nft list table inet gpulab_ollama")
    assert "192.0.2.0/24" in table and "drop" in table
    assert lab.listeners() == ["0.0.0.0:11434"]
    assert lab.sh(probe)[0] != 0, f"{address} reached Ollama without being allowed"
    assert lab.api("/api/version")["version"] == NEW  # loopback is always allowed

    result = lab.deploy("expose-self", ollama_version=NEW, ollama_host="0.0.0.0:11434",
                        ollama_allowed_clients=[f"{address}/32"])
    assert result.rc == 0, result.describe()
    rc, text = lab.sh(probe)
    assert rc == 0, text
    assert f"{address}" in lab.out("nft list table inet gpulab_ollama")
    assert lab.out("systemctl is-enabled gpulab-ollama-firewall") == "enabled"

    result = lab.deploy("loopback-again", ollama_version=NEW)
    assert result.rc == 0, result.describe()
    rc, _ = lab.sh("nft list table inet gpulab_ollama")
    assert rc != 0, "the firewall table stays after exposure is turned off"
    lab.wait_api(NEW)
    assert lab.listeners() == ["127.0.0.1:11434"]
    # and gpulab verify, from the same inventory, finds the host ready
    assert_ready(verify(lab.tmp / "inventory-loopback-again.py", label="ollama lab"), [lab.name])
