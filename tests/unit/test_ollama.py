"""Pure Ollama helpers: asset naming by version, URLs, checksums, environment, wsl.conf, nft."""

from __future__ import annotations

import doctest
from pathlib import Path

import jinja2
import pytest

import gpulab.plan.ollama as lib
from gpulab.settings import Settings

pytestmark = pytest.mark.unit

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "ollama"


def test_doctests() -> None:
    assert doctest.testmod(lib).failed == 0


@pytest.mark.parametrize(
    ("version", "machine", "name"),
    [
        ("0.34.2", "x86_64", "ollama-linux-amd64.tar.zst"),
        ("0.14.0", "aarch64", "ollama-linux-arm64.tar.zst"),
        ("0.33.0-rc2", "x86_64", "ollama-linux-amd64.tar.zst"),
        ("0.13.5", "x86_64", "ollama-linux-amd64.tgz"),
        ("0.3.7", "arm64", "ollama-linux-arm64.tgz"),
    ],
)
def test_archive_name_follows_the_zstd_switch_at_0_14_0(version: str, machine: str,
                                                         name: str) -> None:
    assert lib.archive_name(version, machine) == name


def test_archives_before_0_3_7_and_other_arches_are_refused() -> None:
    with pytest.raises(lib.OllamaError, match=r"0\.3\.7"):
        lib.archive_name("0.3.6", "x86_64")
    with pytest.raises(lib.OllamaError, match="riscv64"):
        lib.archive_name("0.34.2", "riscv64")


def test_urls_follow_githubs_release_layout_under_any_base() -> None:
    base = "http://10.0.2.2:8080/mirror/"
    assert lib.archive_url(base, "0.34.2", "x86_64") == (
        "http://10.0.2.2:8080/mirror/v0.34.2/ollama-linux-amd64.tar.zst")
    assert lib.checksums_url(base, "0.34.2") == "http://10.0.2.2:8080/mirror/v0.34.2/sha256sum.txt"


def test_checksum_table_setting_and_fallback() -> None:
    assert lib.known_sha256("0.34.2", "x86_64", None) == lib.KNOWN_SHA256[("0.34.2", "amd64")]
    assert lib.known_sha256("0.34.2", "x86_64", "A" * 64) == "a" * 64
    assert lib.known_sha256("0.30.0", "x86_64", None) is None
    # the settings' default version is in the table for both arches
    default = Settings().ollama_version
    assert {(default, "amd64"), (default, "arm64")} <= set(lib.KNOWN_SHA256)
    assert all(len(v) == 64 and v == v.lower() for v in lib.KNOWN_SHA256.values())


def test_sha256sum_txt_is_matched_by_asset_name_not_position() -> None:
    text = (
        f"{'1' * 64}  ./ollama-darwin.tgz\n"
        f"{'2' * 64}  ./ollama-linux-amd64-rocm.tar.zst\n"
        f"{'3' * 64} *ollama-linux-amd64.tar.zst\n"
        "garbage line\n"
    )
    assert lib.parse_sha256sum(text, "ollama-linux-amd64.tar.zst") == "3" * 64
    assert lib.parse_sha256sum(text, "ollama-linux-arm64.tar.zst") is None


def test_environment_has_only_what_is_set_and_never_http_proxy() -> None:
    env = dict(lib.service_environment(Settings()))
    assert env == {"OLLAMA_HOST": "127.0.0.1:11434",
                   "OLLAMA_MODELS": "/usr/share/ollama/.ollama/models",
                   "OLLAMA_KEEP_ALIVE": "5m"}
    full = dict(lib.service_environment(Settings(
        ollama_num_parallel=2, ollama_max_loaded_models=1, ollama_flash_attention=True,
        ollama_kv_cache_type="q8_0", https_proxy="http://proxy.lab:3128",
        no_proxy=["10.0.0.0/8"], ollama_keep_alive="-1",
    )))
    assert full["OLLAMA_NUM_PARALLEL"] == "2"
    assert full["OLLAMA_MAX_LOADED_MODELS"] == "1"
    assert full["OLLAMA_FLASH_ATTENTION"] == "1"
    assert full["OLLAMA_KV_CACHE_TYPE"] == "q8_0"
    assert full["OLLAMA_KEEP_ALIVE"] == "-1"
    assert full["HTTPS_PROXY"] == "http://proxy.lab:3128"
    assert full["NO_PROXY"] == "localhost,127.0.0.1,::1,10.0.0.0/8"
    assert not any(key.upper() == "HTTP_PROXY" for key in full)


def test_systemd_quoting_escapes_percent_and_quotes() -> None:
    assert lib.systemd_quote("X", 'a"b%c') == '"X=a\\"b%%c"'


def test_wsl_conf_keeps_other_sections_and_fixes_boot() -> None:
    assert lib.wsl_conf_with_systemd(None) == "[boot]\nsystemd=true\n"
    text = "[automount]\nenabled=true\n\n[boot]\ncommand=echo hi\n[user]\ndefault=me\n"
    assert lib.wsl_conf_with_systemd(text) == (
        "[automount]\nenabled=true\n\n[boot]\ncommand=echo hi\nsystemd=true\n[user]\ndefault=me\n")
    done = "[boot]\nsystemd=true\n"
    assert lib.wsl_conf_with_systemd(done) == done


def _render(name: str, **values: object) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    return env.from_string((TEMPLATES / name).read_text()).render(**values)


def test_firewall_rules_accept_loopback_and_allowed_then_drop_the_port() -> None:
    rules = lib.firewall_rules(11434, ["10.0.2.15/32", "192.168.1.0/24", "fd00::/8"])
    text = _render("ollama.nft.j2", rules=rules, table="gpulab_ollama")
    assert "table inet gpulab_ollama {" in text
    assert "delete table inet gpulab_ollama" in text
    assert "ip saddr 127.0.0.0/8 tcp dport 11434 accept" in text
    assert "ip6 saddr ::1 tcp dport 11434 accept" in text
    assert "ip saddr { 10.0.2.15/32, 192.168.1.0/24 } tcp dport 11434 accept" in text
    assert "ip6 saddr { fd00::/8 } tcp dport 11434 accept" in text
    assert text.rstrip().splitlines()[-3].strip() == "tcp dport 11434 counter drop"


def test_unit_orders_after_nvidia_only_on_gpu_hosts_and_requires_firewall_when_exposed() -> None:
    base = dict(version="0.34.2", bin_link=lib.BIN_LINK, service_user="ollama",
                firewall_unit=lib.FIREWALL_UNIT)
    gpu = _render("ollama.service.j2", after_nvidia=True, exposed=False, **base)
    cpu = _render("ollama.service.j2", after_nvidia=False, exposed=True, **base)
    assert "nvidia_uvm" in gpu and "ExecStartPre=-+" in gpu
    # the wait for /dev/nvidia-uvm only while the module is in: no 20 s at every start of a
    # host without it (driver not installed yet, reboot pending)
    assert "while [ -d /sys/module/nvidia_uvm ] && [ ! -e /dev/nvidia-uvm ]" in gpu
    assert "nvidia" not in cpu
    assert f"Requires={lib.FIREWALL_UNIT}" in cpu and "Requires=" not in gpu
    assert "User=ollama" in gpu and "ExecStart=/usr/local/bin/ollama serve" in gpu
    assert "\n\n\n" not in gpu + cpu
