"""The Ollama deploy, planned against recorded facts of every platform.

Each test runs the real ``gpulab.deploys.ollama.ollama`` against a pyinfra ``@fake`` host and
reads back the exact commands and uploaded files. pyinfra's own facts see an empty host,
except for the few canned answers in ``BASE``: Linux, with ``useradd``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from gpulab.deploys.ollama import ollama
from gpulab.plan.ollama import KNOWN_SHA256
from tests.plan.harness import PlannedHost, plan_deploy

pytestmark = pytest.mark.plan

BASE: dict[Any, Any] = {
    "uname -s": "Linux", re.compile(r"command -v \S*useradd"): "/usr/sbin/useradd",
}
GITHUB = "https://github.com/ollama/ollama/releases/download"
SYSTEMD_PLATFORMS = {
    "ubuntu2204-rtx3070.json": True,  # value: a GPU host whose unit waits for nvidia_uvm
    "ubuntu2404-rtx5090.json": True,
    "debian12-gtx1650.json": True,
    "debian12-nogpu.json": False,
    "wsl2-566.json": False,  # the Windows driver: no modules to wait for
}


def _plan(facts: str, data: dict[str, Any] | None = None,
          responses: dict[Any, Any] | None = None) -> PlannedHost:
    return plan_deploy(ollama, facts, data, {**BASE, **(responses or {})})


@pytest.mark.parametrize(("facts", "gpu"), SYSTEMD_PLATFORMS.items())
def test_default_install_on_every_platform(facts: str, gpu: bool) -> None:
    planned = _plan(facts)
    assert "install.sh" not in planned.text
    assert "zstd" in planned.op("Ollama's tools").text
    assert "useradd -d /usr/share/ollama -s /bin/false -g ollama -r -m ollama" in (
        planned.op("ollama user").text)
    release = planned.op("Ollama 0.34.2").text
    assert f"url='{GITHUB}/v0.34.2/ollama-linux-amd64.tar.zst'" in release
    assert f"expected='{KNOWN_SHA256[('0.34.2', 'amd64')]}'" in release
    assert "curl -fsL" in release and "-C - -o \"$part\"" in release
    assert "tar -x -I zstd" in release
    assert "mv -Tf '/usr/local/bin/ollama.gpulab-new' '/usr/local/bin/ollama'" in (
        planned.op("/usr/local/bin/ollama ->").text)
    assert "'/opt/ollama/0.34.2/lib/ollama'" in planned.op("/usr/local/lib/ollama ->").text
    unit = planned.op("Ollama unit").text
    assert "User=ollama" in unit and "ExecStart=/usr/local/bin/ollama serve" in unit
    assert ("nvidia_uvm" in unit) is gpu
    assert "Requires=" not in unit
    dropin = planned.op("Ollama settings drop-in").text
    assert 'Environment="OLLAMA_HOST=127.0.0.1:11434"' in dropin
    assert 'Environment="OLLAMA_MODELS=/usr/share/ollama/.ollama/models"' in dropin
    assert "PROXY" not in dropin
    assert "nftables" not in planned.op("Ollama's tools").text
    assert not any(name.endswith("Ollama firewall rules") and "no " not in name
                   for name in planned.names())
    assert "systemctl start ollama.service" in planned.op("Ollama restarted").text
    assert "systemctl enable ollama.service" in planned.op("running and enabled").text


def test_lan_exposure_installs_and_loads_the_firewall_table() -> None:
    planned = _plan("ubuntu2404-rtx5090.json", {
        "ollama_host": "0.0.0.0:11434", "ollama_allowed_clients": ["10.0.0.0/24", "fd00::/8"],
    })
    assert "nftables" in planned.op("Ollama's tools").text
    rules = planned.op("Ollama firewall rules").text
    assert "upload /etc/gpulab/ollama.nft" in rules
    assert "ip saddr { 10.0.0.0/24 } tcp dport 11434 accept" in rules
    assert "ip6 saddr { fd00::/8 } tcp dport 11434 accept" in rules
    assert "tcp dport 11434 counter drop" in rules
    assert "ExecStart=/usr/sbin/nft -f /etc/gpulab/ollama.nft" in (
        planned.op("Ollama firewall unit").text)
    assert "systemctl enable gpulab-ollama-firewall.service" in (
        planned.op("Ollama firewall enabled").text)
    assert "Requires=gpulab-ollama-firewall.service" in planned.op("Ollama unit").text
    assert 'Environment="OLLAMA_HOST=0.0.0.0:11434"' in planned.op("settings drop-in").text
    names = planned.names()
    assert names.index("gpulab Ollama | Ollama firewall (re)loaded") < names.index(
        "gpulab Ollama | Ollama restarted (binary, configuration or driver changed)")


def test_scheme_without_port_gets_port_80_and_the_capability_to_bind_it() -> None:
    planned = _plan("ubuntu2404-rtx5090.json", {
        "ollama_host": "http://0.0.0.0", "ollama_allowed_clients": ["10.0.0.0/24"],
    })
    dropin = planned.op("settings drop-in").text
    assert 'Environment="OLLAMA_HOST=http://0.0.0.0"' in dropin
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in dropin
    assert "tcp dport 80 counter drop" in planned.op("Ollama firewall rules").text
    default = _plan("ubuntu2404-rtx5090.json").op("settings drop-in").text
    assert "AmbientCapabilities" not in default


def test_loopback_host_removes_a_firewall_left_from_an_earlier_exposure() -> None:
    planned = _plan("debian12-nogpu.json")
    assert "nft delete table inet gpulab_ollama" in planned.op("no Ollama firewall table").text


def test_wsl2_without_systemd_turns_it_on_and_starts_nothing() -> None:
    planned = _plan("wsl2-nosystemd.json")
    wsl = planned.op("WSL2: systemd=true")
    assert "wsl --shutdown" in wsl.name
    assert "upload /etc/wsl.conf\n[boot]\nsystemd=true\n" in wsl.text
    assert "systemctl" not in planned.text
    assert "Ollama 0.34.2" in planned.op("Ollama 0.34.2").name  # still installed, ready to go
    assert "upload /etc/systemd/system/ollama.service" in planned.op("Ollama unit").text


def test_wsl2_with_systemd_leaves_wsl_conf_alone() -> None:
    planned = _plan("wsl2-566.json")
    assert not any("wsl.conf" in name for name in planned.names())


def test_wsl_conf_other_sections_are_kept() -> None:
    planned = _plan("wsl2-nosystemd.json", responses={
        re.compile(r"cat /etc/wsl.conf"): ["[automount]", "enabled=true", "[boot]",
                                           "systemd=false"],
    })
    text = planned.op("WSL2: systemd=true").text
    assert "[automount]\nenabled=true\n[boot]\nsystemd=true\n" in text


def test_mirror_version_outside_the_table_checks_sha256sum_txt_through_the_proxy() -> None:
    planned = _plan("debian12-gtx1650.json", {
        "ollama_download_base": "http://10.0.0.5:8080/ollama", "ollama_version": "0.13.5",
        "https_proxy": "http://10.0.0.5:3128", "no_proxy": ["10.0.0.0/8"],
    })
    release = planned.op("Ollama 0.13.5").text
    assert "url='http://10.0.0.5:8080/ollama/v0.13.5/ollama-linux-amd64.tgz'" in release
    assert "sums_url='http://10.0.0.5:8080/ollama/v0.13.5/sha256sum.txt'" in release
    assert "expected=''" in release and "tar -x -z" in release
    assert "https_proxy='http://10.0.0.5:3128'; HTTPS_PROXY=$https_proxy" in release
    assert "zstd" not in planned.op("Ollama's tools").text
    dropin = planned.op("settings drop-in").text
    assert 'Environment="HTTPS_PROXY=http://10.0.0.5:3128"' in dropin
    assert 'Environment="NO_PROXY=localhost,127.0.0.1,::1,10.0.0.0/8"' in dropin
    assert "HTTP_PROXY" not in dropin.replace("HTTPS_PROXY", "")


def test_sha256_setting_overrides_the_table() -> None:
    planned = _plan("ubuntu2204-rtx3070.json", {"ollama_sha256": "ab" * 32})
    assert f"expected='{'ab' * 32}'" in planned.op("Ollama 0.34.2").text


def test_every_service_setting_reaches_the_drop_in() -> None:
    planned = _plan("ubuntu2204-rtx3070.json", {
        "ollama_models_dir": "/srv/ollama/models", "ollama_keep_alive": "1h",
        "ollama_num_parallel": 2, "ollama_max_loaded_models": 1,
        "ollama_flash_attention": True, "ollama_kv_cache_type": "q8_0",
    })
    dropin = planned.op("settings drop-in").text
    for line in ("OLLAMA_MODELS=/srv/ollama/models", "OLLAMA_KEEP_ALIVE=1h",
                 "OLLAMA_NUM_PARALLEL=2", "OLLAMA_MAX_LOADED_MODELS=1",
                 "OLLAMA_FLASH_ATTENTION=1", "OLLAMA_KV_CACHE_TYPE=q8_0"):
        assert f'Environment="{line}"' in dropin
    models = planned.op("models directory").text
    assert "install -d -o ollama -g ollama -m 755 /srv/ollama/models" in models
    assert "install -d -m 755 /srv/ollama\n" in models  # a parent: traversable, not re-owned


def test_same_version_already_unpacked_and_linked_is_not_downloaded() -> None:
    sha = KNOWN_SHA256[("0.34.2", "amd64")]
    planned = _plan("ubuntu2204-rtx3070.json", responses={
        re.compile(r"cat /opt/ollama/0\.34\.2/\.gpulab-sha256"): sha,
        re.compile(r"readlink /usr/local/bin/ollama"): "/opt/ollama/0.34.2/bin/ollama",
        re.compile(r"readlink /usr/local/lib/ollama"): "/opt/ollama/0.34.2/lib/ollama",
    })
    assert planned.op("Ollama 0.34.2").commands == ()
    assert planned.op("/usr/local/bin/ollama ->").commands == ()
    assert planned.op("/usr/local/lib/ollama ->").commands == ()


def test_upgrade_unpacks_the_new_version_next_to_the_old_and_switches_links() -> None:
    planned = _plan("ubuntu2204-rtx3070.json", {"ollama_version": "0.32.9"}, responses={
        re.compile(r"readlink /usr/local/bin/ollama"): "/opt/ollama/0.34.2/bin/ollama",
    })
    release = planned.op("Ollama 0.32.9").text
    assert "dest='/opt/ollama/0.32.9'" in release
    assert "/opt/ollama/0.34.2" not in release  # the running version is left alone
    assert "/opt/ollama/0.32.9/bin/ollama" in planned.op("/usr/local/bin/ollama ->").text
    assert "version 0.32.9" in planned.op("Ollama unit").text


def test_absent_removes_everything_but_the_models() -> None:
    planned = _plan("debian12-gtx1650.json", {"ollama_state": "absent"})
    names = " ".join(planned.names())
    for thing in ("Ollama stopped", "no /etc/systemd/system/ollama.service ",
                  "no /etc/systemd/system/ollama.service.d/gpulab.conf",
                  "no Ollama firewall unit", "no Ollama firewall rules", "no /usr/local/bin/ollama",
                  "no /usr/local/lib/ollama", "no /opt/ollama", "no /var/cache/gpulab/ollama",
                  "no ollama user", "no ollama group"):
        assert thing in names + " "
    assert "models removed" not in names and "home removed" not in names
    assert "useradd" not in planned.text and "curl" not in planned.text


def test_absent_with_remove_models_deletes_them() -> None:
    planned = _plan("debian12-gtx1650.json",
                    {"ollama_state": "absent", "ollama_remove_models": True})
    assert any("models removed" in name for name in planned.names())
    assert any("home removed" in name for name in planned.names())
