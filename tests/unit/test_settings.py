"""Inventory data: defaults, and every way it can be wrong, named host: field: message."""

from __future__ import annotations

from typing import Any

import pytest

from gpulab.settings import (
    NVIDIA_REPO_BASE,
    OLLAMA_DOWNLOAD_BASE,
    SettingsError,
    parse_inventory_settings,
    parse_settings,
)

pytestmark = pytest.mark.unit


def _problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SettingsError) as caught:
        parse_settings("lab-01", data)
    return [(p.field, p.message) for p in caught.value.problems]


def test_defaults_point_at_real_upstreams_and_are_safe() -> None:
    settings = parse_settings("lab-01", {})
    assert settings.nvidia_repo_base == NVIDIA_REPO_BASE
    assert NVIDIA_REPO_BASE.startswith("https://developer.download.nvidia.com/")
    assert settings.ollama_download_base == OLLAMA_DOWNLOAD_BASE
    assert OLLAMA_DOWNLOAD_BASE.startswith("https://github.com/ollama/ollama/")
    assert settings.ollama_host == "127.0.0.1:11434" and not settings.ollama_exposed
    assert settings.models == ["qwen2.5:7b", "znbang/bge:large-zh-v1.5-f16"]
    assert settings.reboot_allowed is False
    assert settings.vllm_enabled is False


def test_foreign_keys_are_left_alone() -> None:
    settings = parse_settings("lab-01", {"ssh_port": 2222, "_sudo": True, "course": "llm"})
    assert settings.driver_source == "auto"


def test_unknown_gpulab_key_is_named_with_a_suggestion() -> None:
    assert _problems({"ollama_hots": "0.0.0.0"}) == [
        ("ollama_hots", "unknown gpulab key; did you mean ollama_host?")
    ]


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        ({"driver_branch": 581}, "driver_branch", "driver branch 581 is unknown"),
        ({"driver_branch": "new"}, "driver_branch", "valid integer"),
        ({"driver_source": "nvidia"}, "driver_source", "'auto', 'ubuntu', 'cuda-repo'"),
        ({"driver_flavour": "closed"}, "driver_flavour", "'open'"),
        ({"cuda_toolkit": "latest"}, "cuda_toolkit", "use auto, none, X.Y or X.Y.Z"),
        ({"cuda_toolkit": "12.7"}, "cuda_toolkit", "not in gpulab's table"),
        ({"nvidia_repo_base": "ftp://mirror/cuda"}, "nvidia_repo_base", "http:// or https://"),
        ({"apt_proxy": "10.0.0.5:3142"}, "apt_proxy", "http:// or https://"),
        ({"apt_lock_timeout": -1}, "apt_lock_timeout", "greater than or equal to 0"),
        ({"ollama_version": "latest"}, "ollama_version", "release number like 0.34.2"),
        ({"ollama_sha256": "abc"}, "ollama_sha256", "64 lower-case hex"),
        ({"ollama_host": "0.0.0.0:http"}, "ollama_host", "is not a number"),
        ({"ollama_host": "127.0.0.1:70000"}, "ollama_host", "out of range"),
        ({"ollama_models_dir": "models"}, "ollama_models_dir", "absolute path"),
        ({"ollama_keep_alive": "forever"}, "ollama_keep_alive", "duration"),
        ({"ollama_kv_cache_type": "q2"}, "ollama_kv_cache_type", "'q8_0'"),
        ({"ollama_num_parallel": 0}, "ollama_num_parallel", "greater than or equal to 1"),
        ({"ollama_state": "gone"}, "ollama_state", "'present' or 'absent'"),
        ({"ollama_allowed_clients": ["10.0.0.0/33"]}, "ollama_allowed_clients", "CIDR"),
        ({"models": ["qwen2.5 7b"]}, "models", "not a model name"),
        ({"models": ["a/b/c/d:e"]}, "models", "too many '/'"),
        ({"models": ["ns.with.dots/m:t"]}, "models", "namespace"),
        ({"models_distribution": "p2p"}, "models_distribution", "'direct', 'seeded' or 'swarm'"),
        ({"vllm_port": 0}, "vllm_port", "greater than 0"),
        ({"reboot_batch": 0}, "reboot_batch", "greater than or equal to 1"),
        ({"reboot_allowed": "sometimes"}, "reboot_allowed", "valid boolean"),
        ({"driver_hold_kernel": "maybe"}, "driver_hold_kernel", "valid boolean"),
        # the branch's first release is known without facts: `gpulab check` refuses the pin
        ({"driver_branch": 535, "cuda_toolkit": "13.0"}, "cuda_toolkit",
         "driver_branch 535: CUDA 13.0.2 needs driver 580.95.05 or newer"),
    ],
)
def test_each_bad_value_is_named(data: dict[str, Any], field: str, fragment: str) -> None:
    problems = _problems(data)
    assert len(problems) == 1, problems
    assert problems[0][0] == field
    assert fragment in problems[0][1]


def test_listening_beyond_loopback_needs_allowed_clients() -> None:
    assert _problems({"ollama_host": "0.0.0.0:11434"})[0][0] == "ollama_allowed_clients"
    settings = parse_settings(
        "lab-01", {"ollama_host": "0.0.0.0", "ollama_allowed_clients": ["10.0.0.0/24"]}
    )
    assert settings.ollama_exposed


def test_vllm_beyond_loopback_needs_a_key_and_a_model() -> None:
    fields = [field for field, _ in _problems({"vllm_enabled": True, "vllm_host": "0.0.0.0"})]
    assert fields == ["vllm_api_key", "vllm_model"]
    settings = parse_settings("lab-01", {
        "vllm_enabled": True, "vllm_host": "0.0.0.0", "vllm_api_key": "s3cret",
        "vllm_model": "Qwen/Qwen2.5-7B-Instruct",
    })
    assert "s3cret" not in repr(settings)  # the key never shows in logs


def test_trailing_slashes_are_trimmed() -> None:
    settings = parse_settings("lab-01", {"ollama_download_base": "http://10.0.0.5:8080/ollama/"})
    assert settings.ollama_download_base == "http://10.0.0.5:8080/ollama"


def test_whole_inventory_reports_every_host_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_inventory_settings([
            ("lab-01", {"driver_branch": 581}),
            ("lab-02", {}),
            ("lab-03", {"cuda_toolkit": "12.7", "ollama_hots": "x"}),
        ])
    lines = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in lines] == ["lab-01", "lab-03", "lab-03"]
    assert lines[0].startswith("lab-01: driver_branch: ")


def test_valid_inventory() -> None:
    settings = parse_inventory_settings([("a", {}), ("b", {"driver_branch": 570})])
    assert settings["b"].driver_branch == 570


def test_room_cache_derives_what_the_cache_serves_unless_set() -> None:
    from gpulab.settings import from_room_cache, parse_settings

    room = {"room_cache": "10.0.0.5:8080", "room_cidrs": ["10.0.0.0/24"]}
    derived = parse_settings("pc-1", room)
    assert derived.apt_proxy == "http://10.0.0.5:3142"
    assert derived.ollama_download_base == "http://10.0.0.5:8080/ollama"
    assert derived.nvidia_repo_base == (
        "http://HTTPS///developer.download.nvidia.com/compute/cuda/repos")
    assert all(from_room_cache(derived, key)
               for key in ("apt_proxy", "ollama_download_base", "nvidia_repo_base"))
    own_proxy = parse_settings("pc-1", {**room, "apt_proxy": "http://10.0.0.9:3128"})
    assert own_proxy.apt_proxy == "http://10.0.0.9:3128"
    assert own_proxy.nvidia_repo_base.startswith("https://")  # not through the cache's proxy
    assert not from_room_cache(own_proxy, "apt_proxy")
    assert from_room_cache(own_proxy, "ollama_download_base")
    assert parse_settings("pc-1", {}).apt_proxy is None


def test_room_cache_must_be_an_address_in_the_rooms_networks() -> None:
    from gpulab.settings import SettingsError, parse_settings

    for data, field, words in [
        ({"room_cache": "10.0.1.5", "room_cidrs": ["10.0.0.0/24"]}, "room_cache",
         "in none of room_cidrs"),
        ({"room_cache": "10.0.0.5"}, "room_cidrs", "room's networks"),
        ({"room_cache": "cache.lab", "room_cidrs": ["10.0.0.0/24"]}, "room_cache",
         "IPv4 address"),
        ({"room_cache": "10.0.0.5:0", "room_cidrs": ["10.0.0.0/24"]}, "room_cache", "port"),
        ({"room_cache": "10.0.0.5", "room_cidrs": ["room"]}, "room_cidrs", "not a CIDR"),
        ({"room_cache": "10.0.0.5", "room_cidrs": ["10.0.0.0/24"],
          "nvidia_repo_base": "https://mirror.lab:8443/cuda"}, "nvidia_repo_base", "443 only"),
    ]:
        with pytest.raises(SettingsError) as error:
            parse_settings("pc-1", data)
        problem = error.value.problems[0]
        assert (problem.field, words in problem.message) == (field, True), problem
