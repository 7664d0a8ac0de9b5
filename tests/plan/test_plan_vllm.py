"""vLLM's plan on recorded hosts: refused with its reason, or the wheel and memory it gets."""

from __future__ import annotations

from typing import Any

import pytest

from gpulab.facts.model import FactsFile
from gpulab.plan.host import HostPlan, PlanError, make_plan
from gpulab.settings import parse_settings
from tests.plan.harness import FACTS_DIR

pytestmark = pytest.mark.plan

QWEN = "Qwen/Qwen2.5-7B-Instruct"
AWQ = "Qwen/Qwen2.5-7B-Instruct-AWQ"


def _plan(facts: str, **data: Any) -> HostPlan:
    recorded = FactsFile.model_validate_json((FACTS_DIR / facts).read_text())
    settings = parse_settings(recorded.host, {"vllm_enabled": True, "vllm_model": QWEN, **data})
    return make_plan(recorded.host, recorded.facts, settings)


def _refusal(facts: str, **data: Any) -> PlanError:
    with pytest.raises(PlanError) as caught:
        _plan(facts, **data)
    return caught.value


def test_refused_without_an_nvidia_gpu() -> None:
    error = _refusal("debian12-nogpu.json")
    assert error.field == "vllm_enabled" and "no NVIDIA GPU found" in error.message


def test_refused_on_wsl2_without_systemd() -> None:
    error = _refusal("wsl2-nosystemd.json", vllm_model=AWQ)
    assert error.field == "vllm_enabled"
    assert "WSL2 without systemd" in error.message and "wsl --shutdown" in error.message


def test_refused_below_the_releases_compute_capability() -> None:
    error = _refusal("ubuntu2404-pascal.json")
    assert error.field == "vllm_version"
    assert "Pascal GPUs (compute capability 6.0) are below vLLM 0.26.0's floor 7.5" in (
        error.message)
    assert "set vllm_enabled: false" in error.message  # no release gpulab knows runs Pascal


def test_refused_on_a_driver_too_old_for_every_wheel() -> None:
    error = _refusal("ubuntu2204-t4-520.json", driver_source="none")
    assert error.field == "vllm_version"
    assert "driver 520.61.05 (linux) is too old for vLLM 0.26.0's wheels" in error.message
    assert "CUDA 12.9 needs 575.51.03 (or 525.60.13 under minor-version compatibility)" in (
        error.message)


def test_refused_on_a_small_gpu_naming_the_quantized_build_that_fits() -> None:
    error = _refusal("ubuntu2404-rtx3070-580.json", ollama_state="absent")
    assert error.field == "vllm_model"
    assert (f"{QWEN} needs ~16509 MiB (weights 14525 MiB, KV cache for 8192 tokens 448 MiB, "
            "margin 1536 MiB) but gets 7372 MiB at 0.90 of the GPU's 8192 MiB") in error.message
    assert error.message.endswith(f"use {AWQ}, which fits")


def test_small_gpu_shared_with_ollama_cannot_hold_both() -> None:
    error = _refusal("ubuntu2404-rtx3070-580.json", vllm_model=AWQ)
    assert error.field == "vllm_model"
    assert "beside Ollama's qwen2.5:7b (~5360 MiB)" in error.message
    assert "no build gpulab knows fits: set ollama_state: absent" in error.message


def test_quantized_build_alone_on_the_course_floor_gpu() -> None:
    vllm = _plan("ubuntu2404-rtx3070-580.json", vllm_model=AWQ, ollama_state="absent").vllm
    assert vllm.fits_gpu is True and vllm.gpu_memory_utilization == 0.9
    assert vllm.memory_reason.startswith(f"{AWQ} needs ~7306 MiB")


def test_utilization_setting_beyond_what_ollama_leaves_is_refused() -> None:
    error = _refusal("ubuntu2404-rtx4090-580.json", vllm_gpu_memory_utilization=0.9)
    assert error.field == "vllm_gpu_memory_utilization"
    assert "leaving at most 0.78 of it for vLLM, not 0.90" in error.message


def test_ubuntu_2404_rtx4090_580_gets_the_default_cuda13_wheel_beside_ollama() -> None:
    plan = _plan("ubuntu2404-rtx4090-580.json", vllm_host="0.0.0.0", vllm_api_key="k")
    vllm = plan.vllm
    assert plan.driver.branch == 580
    assert (vllm.requirement, vllm.wheel_cuda, vllm.wheel_index) == ("vllm==0.26.0", "13.0",
                                                                      "pypi")
    assert vllm.extra_index_urls == () and vllm.index_url is None
    assert vllm.reason == ("cu130 wheel (PyTorch 2.11) from the package index: driver "
                           "580.65.06 meets CUDA 13.0's 580.65.06")
    # 24564 MiB less Ollama's ~5360 MiB for qwen2.5:7b leaves 0.78 of the GPU.
    assert vllm.shares_gpu_with_ollama and vllm.gpu_memory_utilization == 0.78
    assert vllm.fits_gpu is True
    assert (vllm.model, vllm.base_url, vllm.api_key_required) == (
        QWEN, "http://127.0.0.1:8000/v1", True)


def test_ubuntu_2204_rtx4090_550_gets_the_cuda_12_9_variant_index() -> None:
    vllm = _plan("ubuntu2204-rtx4090-550.json", driver_branch=550, driver_source="cuda-repo",
                 ollama_state="absent",
                 vllm_pip_index_url="http://10.0.0.5:3141/root/pypi/+simple").vllm
    assert vllm.requirement == "vllm==0.26.0+cu129" and vllm.wheel_index == "variant"
    assert vllm.extra_index_urls == ("https://wheels.vllm.ai/0.26.0/cu129",
                                     "https://download.pytorch.org/whl/cu129")
    assert vllm.index_url == "http://10.0.0.5:3141/root/pypi/+simple"
    assert "CUDA 12.9 under minor-version compatibility: driver 550.54.14 meets the 12.x " \
           "floor 525.60.13" in vllm.reason
    assert vllm.gpu_memory_utilization == 0.9 and not vllm.shares_gpu_with_ollama
    assert not vllm.api_key_required


def test_older_release_pin_follows_its_own_row() -> None:
    vllm = _plan("ubuntu2204-rtx4090-550.json", driver_branch=550, driver_source="cuda-repo",
                 vllm_version="0.9.0").vllm
    assert (vllm.requirement, vllm.torch, vllm.wheel_cuda) == ("vllm==0.9.0", "2.7.0", "12.8")


def test_unknown_release_is_refused_with_the_offered_ones() -> None:
    error = _refusal("ubuntu2404-rtx4090-580.json", vllm_version="0.1.0")
    assert error.field == "vllm_version" and "offered: 0.26.0, 0.9.0" in error.message


def test_unknown_model_and_unknown_memory_do_not_refuse() -> None:
    unknown_model = _plan("ubuntu2404-rtx4090-580.json", vllm_model="acme/chat-3b").vllm
    assert unknown_model.fits_gpu is None
    assert "no config data for acme/chat-3b" in unknown_model.memory_reason
    no_driver_yet = _plan("ubuntu2404-rtx5090.json").vllm
    assert no_driver_yet.fits_gpu is None and no_driver_yet.wheel_cuda == "13.0"
    assert "GPU memory unknown until the driver runs" in no_driver_yet.memory_reason


def test_disabled_is_the_default() -> None:
    recorded = FactsFile.model_validate_json((FACTS_DIR / "debian12-nogpu.json").read_text())
    plan = make_plan(recorded.host, recorded.facts, parse_settings(recorded.host, {}))
    assert not plan.vllm.enabled and plan.vllm.reason == "vllm_enabled is false"
