"""The room cache on a room network of three guests: one cache, two hosts, real servers.

``room-01`` becomes the cache with the real deploy (Debian's apt-cacher-ng and nginx);
``room-02`` and ``room-03`` are provisioned through it in one pyinfra run: NVIDIA's
repository (the stand-in, over HTTPS with a throw-away certificate the cache trusts) through
apt-cacher-ng's ``http://HTTPS///`` route, Debian's archive through apt-cacher-ng, the Ollama
release and the course model over HTTP from nginx. The guests reach each other only on the
room network (``10.77.0.0/24``), a QEMU socket netdev on this machine's loopback; the
stand-ins count what they served: every upstream file once for the whole room.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpulab.models.names import parse_model_name
from gpulab.models.registry import RegistryClient
from gpulab.models.store import Store
from tests.fixtures.http_server import StaticServer, self_signed_certificate
from tests.fixtures.nvidia_repo import build_repo
from tests.fixtures.ollama_registry import PublishedModel, RegistryStandIn
from tests.fixtures.ollama_release import build_release
from tests.fleet import FleetUnderTest, free_udp_port, inventory_with, join_room
from tests.integration.conftest import require_guests
from tests.integration.outcomes import assert_unchanged
from tests.phases import record_phase, timed
from tests.pyinfra_run import PyinfraResult, run_pyinfra

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "tests/plan/facts/debian12-gtx1650.json"
VERSION = "0.33.0"
CACHE, HOSTS = "room-01", ("room-02", "room-03")
CACHE_IP = "10.77.0.1"
MODELS = "/usr/share/ollama/.ollama/models"
ACNG_LOG = "/var/log/apt-cacher-ng/apt-cacher.log"


@dataclass
class Room:
    fleet: FleetUnderTest
    tmp: Path
    nvidia: StaticServer
    releases: StaticServer
    model: PublishedModel
    data: dict[str, Any]
    facts: Path

    def sh(self, name: str, command: str, check: bool = True) -> str:
        rc, output = self.fleet.ssh(name, command, timeout=120)
        if check and rc != 0:
            raise AssertionError(f"{name}: {command!r}: exit {rc}\n{output}")
        return output

    def deploy(self, label: str, deploys: tuple[str, ...], limit: list[str],
               **data: Any) -> PyinfraResult:
        per_host = {name: {"gpulab_stand_in_facts": str(self.facts)} for name in HOSTS}
        inventory = inventory_with(self.fleet, {**self.data, **data},
                                   self.tmp / f"inventory-{label.replace(' ', '-')}.py",
                                   per_host=per_host)
        result = run_pyinfra(inventory, *(REPO / "deploy" / d for d in deploys), cwd=REPO,
                             extra_args=[arg for name in limit for arg in ("--limit", name)],
                             timeout=1500)
        record_phase(f"room cache: {label} (rc {result.rc})", result.seconds)
        return result

    def upstream_once(self) -> list[str]:
        """Upstream files the room fetched more than once (none, when the cache works)."""
        repeated = []
        for server in (self.nvidia, self.releases):
            for path in {record.path for record in server.requests_for("", "GET")}:
                if server.count(path, "GET") > 1:
                    repeated.append(f"{path}: {server.count(path, 'GET')}")
        return repeated


@pytest.fixture(scope="module")
def room(lab_image: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    require_guests()
    tmp = tmp_path_factory.mktemp("room-cache")
    cert, key = self_signed_certificate(tmp)
    fleet = FleetUnderTest(tmp / "fleet", hosts=3, prefix="room", memory_mib=1024,
                           image=lab_image, room_port=free_udp_port(),
                           log=lambda m: print(m, flush=True))
    with StaticServer(tmp / "nvidia", tls=(cert, key)) as nvidia, \
            StaticServer(tmp / "www") as releases, RegistryStandIn(tmp / "registry") as registry, \
            fleet:
        build_repo(tmp / "nvidia", "debian12", nvidia.guest_url)
        build_release(releases.root, VERSION)
        model = registry.publish("qwen2.5:7b", payload_bytes=2 << 20)
        store = tmp / "store"
        RegistryClient().fetch(Store(store), parse_model_name("qwen2.5:7b"), registry.url)
        with timed("room cache: boot 3 guests with a room network"):
            fleet.up()
            for name in fleet.guests:
                join_room(fleet, name)
        # The cache trusts the stand-in's certificate, as it trusts NVIDIA's CA.
        pem = cert.read_text()
        rc, output = fleet.ssh(CACHE, f"cat > /usr/local/share/ca-certificates/stand-in.crt "
                               f"<<'EOF'\n{pem}EOF\nupdate-ca-certificates", timeout=120)
        assert rc == 0, output
        recorded = json.loads(RECORDED.read_text())
        recorded["facts"]["kernel"] = fleet.image.kernel_version
        facts = tmp / "facts-room.json"
        facts.write_text(json.dumps(recorded))
        data = {
            "room_cache": CACHE_IP, "room_cidrs": ["10.77.0.0/24"],
            "room_cache_nvidia_distros": ["debian12"],
            "nvidia_repo_base": nvidia.guest_url,
            "ollama_version": VERSION, "driver_source": "cuda-repo", "cuda_toolkit": "12.6",
            "models": ["qwen2.5:7b"], "models_distribution": "seeded",
            "models_store": str(store),
        }
        yield Room(fleet, tmp, nvidia, releases, model, data, facts)


def test_the_cache_is_set_up_from_the_upstreams(room: Room) -> None:
    # The cache itself fetches from the stand-ins; hosts never see their addresses.
    result = room.deploy("cache set-up", ("room_cache.py",), [CACHE],
                         ollama_download_base=room.releases.guest_url)
    assert result.rc == 0, result.describe()
    assert room.releases.count(f"/v{VERSION}/ollama-linux-amd64.tar.zst", "GET") == 1
    assert room.nvidia.count("/debian12/x86_64/cuda-keyring_1.1-1_all.deb", "GET") == 1
    listing = room.sh(CACHE, "cd /srv/gpulab-cache && find . -type f | sort")
    assert f"./ollama/v{VERSION}/sha256sum.txt" in listing
    assert "./nvidia/debian12/x86_64/cuda-keyring_1.1-1_all.deb" in listing
    assert "./models/manifests/registry.ollama.ai/library/qwen2.5/7b" in listing
    # Read-only for the room; no report page; Ollama's registry paths answer with Location.
    put = room.sh(HOSTS[0], f"curl -s -o /dev/null -w '%{{http_code}}' -X PUT --data x "
                  f"http://{CACHE_IP}/gpulab-room-cache.txt")
    assert put in ("403", "405"), put
    report = room.sh(HOSTS[0], f"curl -s http://{CACHE_IP}:3142/acng-report.html")
    assert "Statistics" not in report and "maintenance" not in report.lower(), report[:400]
    manifest = json.loads(room.sh(HOSTS[0], f"curl -fsS http://{CACHE_IP}/v2/library/qwen2.5/"
                                  "manifests/7b"))
    digest = manifest["layers"][0]["digest"]
    headers = room.sh(HOSTS[0], f"curl -fsS -D - -o /dev/null http://{CACHE_IP}/v2/library/"
                      f"qwen2.5/blobs/{digest}")
    assert "location:" in headers.lower(), headers


def test_both_hosts_take_everything_from_the_cache_once(room: Room) -> None:
    result = room.deploy("2 hosts through the cache", (
        "base.py", "nvidia.py", "cuda.py", "ollama.py", "models.py"), list(HOSTS))
    assert result.rc == 0, result.describe()
    for name in HOSTS:
        assert room.sh(name, "dpkg-query -W -f='${Version}' cuda-toolkit-12-6").startswith(
            "12.6")
        sources = room.sh(name, "cat /etc/apt/sources.list.d/cuda-debian12-x86_64.list")
        assert f"http://HTTPS///{room.nvidia.guest_url.removeprefix('https://')}" in sources
        tags = json.loads(room.sh(name, "curl -fsS http://127.0.0.1:11434/api/tags"))
        assert {m["name"] for m in tags["models"]} == {"qwen2.5:7b"}
    assert room.upstream_once() == []
    # apt-cacher-ng fetched each package once ('I') and handed it to both hosts ('O').
    log = room.sh(CACHE, f"cat {ACNG_LOG}")
    fetched = [line.split("|") for line in log.splitlines() if "cuda-toolkit-12-6" in line]
    assert [f for f in fetched if f[1] == "I"], log[-2000:]
    clients = {f[3] for f in fetched if f[1] == "O"}
    assert clients == {"10.77.0.2", "10.77.0.3"}, log[-2000:]
    debian = [line for line in log.splitlines() if "|O|" in line and ".deb" in line
              and "debian" in line]
    assert debian, "Debian's archive came through the cache too"


def test_a_rerun_changes_nothing(room: Room) -> None:
    cache = room.deploy("cache rerun", ("room_cache.py",), [CACHE],
                        ollama_download_base=room.releases.guest_url)
    assert_unchanged(cache, [CACHE])
    hosts = room.deploy("hosts rerun", ("base.py", "nvidia.py", "cuda.py", "ollama.py",
                                        "models.py"), list(HOSTS))
    assert_unchanged(hosts, HOSTS)
    assert room.upstream_once() == []


def test_hosts_fail_naming_the_cache_when_it_is_down(room: Room) -> None:
    room.sh(CACHE, "systemctl stop nginx")
    try:
        result = room.deploy("nginx stopped", ("base.py",), list(HOSTS))
        assert result.rc != 0
        assert set(result.failed) == set(HOSTS), result.describe()
        assert f"room cache {CACHE_IP}: http://{CACHE_IP}/gpulab-room-cache.txt" in result.output
    finally:
        room.sh(CACHE, "systemctl start nginx")
