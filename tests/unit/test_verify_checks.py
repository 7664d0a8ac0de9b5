"""gpulab.verify.checks on recorded real outputs: every verdict, its cause and its fix.

Recorded outputs live in ``tests/data/recorded/`` (first line: the public source). Inline
inputs are for files gpulab writes itself (pins, blacklists) or ``ss``-style lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpulab.facts.model import CudaToolkit, HostFacts, OsInfo, PciGpu
from gpulab.facts.nvidia import parse_nvidia_module_version, parse_nvidia_smi_query
from gpulab.plan.driver import blacklist_patterns
from gpulab.plan.host import make_plan
from gpulab.settings import parse_settings
from gpulab.verify import checks
from gpulab.verify.probes import Subject, probe_blacklist, probe_driver_held

pytestmark = pytest.mark.unit

RECORDED = Path(__file__).resolve().parents[1] / "data" / "recorded"


def recorded(name: str) -> str:
    """A recorded output without its source line."""
    return (RECORDED / name).read_text().split("\n", 1)[1]


# --- nvidia-smi ---------------------------------------------------------------------------


def test_smi_reports_the_planned_branch() -> None:
    smi = parse_nvidia_smi_query(recorded("smi-query-2x-l40s-extra-columns.txt"), 0)
    outcome = checks.check_smi(smi, 595)
    assert outcome.status == "pass"
    assert "NVIDIA L40S" in outcome.message and "595.71.05" in outcome.message


def test_smi_on_another_branch_fails_naming_both() -> None:
    smi = parse_nvidia_smi_query(recorded("smi-query-2x-l40s-extra-columns.txt"), 0)
    outcome = checks.check_smi(smi, 580)
    assert outcome.status == "fail"
    assert "595.71.05, not branch 580" in outcome.message and "Fix:" in outcome.message


def test_smi_version_mismatch_says_reboot() -> None:
    smi = parse_nvidia_smi_query(recorded("smi-version-mismatch.txt"), 18)
    outcome = checks.check_smi(smi, 580)
    assert outcome.status == "fail"
    assert "Driver/library version mismatch" in outcome.message
    assert "reboot" in outcome.message


def test_smi_driver_not_loaded_fails_with_its_message() -> None:
    smi = parse_nvidia_smi_query(recorded("smi-driver-not-loaded.txt"), 9)
    outcome = checks.check_smi(smi, 580)
    assert outcome.status == "fail" and "couldn't communicate" in outcome.message


def test_smi_not_installed() -> None:
    smi = parse_nvidia_smi_query("", None)
    assert checks.check_smi(smi, 580).message.startswith("nvidia-smi is not installed")


def test_smi_on_wsl_accepts_any_windows_driver() -> None:
    smi = parse_nvidia_smi_query(recorded("smi-query-rtx5060-laptop-header.txt"), 0)
    assert checks.check_smi(smi, None).status == "pass"


# --- modules and the NVML library -----------------------------------------------------------

PROC_MODULES = """\
nvidia_uvm 1961984 0 - Live 0x0000000000000000 (PO)
nvidia_drm 122880 0 - Live 0x0000000000000000 (PO)
nvidia 104067072 2 nvidia_uvm,nvidia_drm, Live 0x0000000000000000 (PO)
"""


def test_modules_loaded() -> None:
    assert checks.check_modules(checks.parse_proc_modules(PROC_MODULES)).status == "pass"


def test_uvm_missing_names_modprobe() -> None:
    loaded = checks.parse_proc_modules(PROC_MODULES) - {"nvidia_uvm"}
    outcome = checks.check_modules(loaded)
    assert outcome.status == "fail"
    assert "not loaded: nvidia_uvm" in outcome.message and "modprobe nvidia_uvm" in outcome.message


def test_nouveau_instead_of_nvidia() -> None:
    outcome = checks.check_modules({"nouveau", "drm"})
    assert outcome.status == "fail" and "nouveau" in outcome.message


@pytest.mark.parametrize("name, version", [
    ("proc-driver-version-open-565.txt", "565.57.01"),
    ("proc-driver-version-550.txt", None),
])
def test_module_matches_library_on_recorded_proc_version(name: str, version: str | None) -> None:
    module = parse_nvidia_module_version(recorded(name))
    assert module is not None
    if version is not None:
        assert module == version
    libraries = checks.parse_nvml_versions(
        f"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1\n"
        f"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{module}\n"
    )
    assert checks.check_module_matches_library(module, libraries).status == "pass"


def test_module_older_than_library_is_the_mismatch_morning() -> None:
    module = parse_nvidia_module_version(recorded("proc-driver-version-open-565.txt"))
    outcome = checks.check_module_matches_library(module, {"565.77.01"})
    assert outcome.status == "fail"
    assert "loaded module 565.57.01, userspace library 565.77.01" in outcome.message
    assert "reboot" in outcome.message


def test_module_not_loaded() -> None:
    assert checks.check_module_matches_library(None, {"580.95.05"}).status == "fail"


# --- driver packages, holds, pin, blacklist -----------------------------------------------


def test_packages_with_the_branch_in_their_name() -> None:
    names = ["linux-modules-nvidia-580-open-generic", "nvidia-driver-580-open"]
    versions = {names[0]: "6.8.0-45.45+1", names[1]: "580.95.05-0ubuntu1"}
    assert checks.check_driver_packages([], names, versions, 580, "open").status == "pass"


def test_missing_pre_package_fails() -> None:
    outcome = checks.check_driver_packages(
        ["nvidia-driver-pinning-590"], ["nvidia-open"], {"nvidia-open": "590.44.01-1"}, 590,
        "open")
    assert outcome.status == "fail" and "nvidia-driver-pinning-590" in outcome.message


def test_held_after_unhold_fails_with_the_command() -> None:
    held = checks.parse_showhold("nvidia-kernel-dkms\n")
    outcome = checks.check_held(["nvidia-driver", "nvidia-kernel-dkms"], held)
    assert outcome.status == "fail"
    assert "apt-mark hold nvidia-driver" in outcome.message


def test_branch_pin_wrong_branch() -> None:
    text = "Package: nvidia-*\nPin: version 590.*\nPin-Priority: 1000\n"
    assert checks.check_branch_pin(text, 580, "/p").status == "fail"
    assert checks.check_branch_pin(None, 580, "/p").message.startswith("/p is missing")


def test_blacklist_from_the_deploy_patterns() -> None:
    patterns = blacklist_patterns(["nvidia-open-580"])
    text = "Unattended-Upgrade::Package-Blacklist {\n" + "".join(
        f'    "{p}";\n' for p in patterns) + "};\n"
    assert checks.check_blacklist(text, patterns, "/b").status == "pass"
    partial = text.replace('    "libnvidia-";\n', "")
    outcome = checks.check_blacklist(partial, patterns, "/b")
    assert outcome.status == "fail" and "libnvidia-" in outcome.message


# --- WSL2 ---------------------------------------------------------------------------------


def test_wsl_linux_driver_package_found() -> None:
    listing = "ii  curl\nii  cuda-toolkit-12-6\nii  nvidia-driver-550\nrc  nvidia-dkms-535\n"
    outcome = checks.check_no_linux_driver(checks.parse_dpkg_installed(listing))
    assert outcome.status == "fail"
    assert "nvidia-driver-550" in outcome.message and "nvidia-dkms-535" not in outcome.message


def test_wsl_systemd_set_but_not_running_says_wsl_shutdown() -> None:
    outcome = checks.check_wsl_systemd(True, False)
    assert outcome.status == "fail" and "wsl --shutdown" in outcome.message


# --- CUDA ---------------------------------------------------------------------------------


def test_nvcc_recorded_release_matches() -> None:
    outcome = checks.check_nvcc(0, recorded("nvcc-13.0-V13.0.88.txt"), "13.0.2")
    assert outcome.status == "pass" and "V13.0.88" in outcome.message


def test_nvcc_other_release_fails() -> None:
    outcome = checks.check_nvcc(0, recorded("nvcc-12.8-V12.8.93.txt"), "13.0.0")
    assert outcome.status == "fail" and "release 12.8, planned 13.0" in outcome.message


def test_nvcc_not_found_in_login_shell() -> None:
    outcome = checks.check_nvcc(127, "bash: line 1: nvcc: command not found\n", "12.6.2")
    assert outcome.status == "fail" and "profile.d" in outcome.message


def test_toolkit_under_prefix() -> None:
    found = (CudaToolkit(path="/usr/local/cuda-12.6", version="12.6.3"),)
    assert checks.check_toolkit_installed(found, "/usr/local/cuda-12.6", "12.6.3").status == "pass"
    wrong = checks.check_toolkit_installed(found, "/usr/local/cuda-12.6", "12.6.2")
    assert wrong.status == "fail" and "is CUDA 12.6.3, planned 12.6.2" in wrong.message
    absent = checks.check_toolkit_installed(found, "/usr/local/cuda-13.0", "13.0.0")
    assert "installed: /usr/local/cuda-12.6 (12.6.3)" in absent.message


def test_cuda_link_elsewhere_names_update_alternatives() -> None:
    outcome = checks.check_cuda_link("/opt/other-cuda", "/usr/local/cuda-13.0")
    assert outcome.status == "fail"
    assert "update-alternatives --set cuda /usr/local/cuda-13.0" in outcome.message


def test_driver_runs_toolkit_per_table_3() -> None:
    assert checks.check_driver_runs_toolkit("580.95.05", "13.0.0", "linux").status == "pass"
    outcome = checks.check_driver_runs_toolkit("535.216.03", "13.0.0", "linux")
    assert outcome.status == "fail" and "upgrade the driver" in outcome.message


# --- Ollama -------------------------------------------------------------------------------


def test_listeners_wider_than_planned() -> None:
    sockets = ["tcp://0.0.0.0:22", "tcp://0.0.0.0:11434", "unix:///run/systemd/private"]
    addresses = checks.listening_addresses(sockets, 11434)
    outcome = checks.check_listeners(addresses, "127.0.0.1", 11434)
    assert outcome.status == "fail"
    assert "0.0.0.0:11434, planned 127.0.0.1:11434 only" in outcome.message


def test_listeners_as_planned_and_none() -> None:
    assert checks.check_listeners(["127.0.0.1:11434"], "127.0.0.1", 11434).status == "pass"
    assert "nothing listens" in checks.check_listeners([], "127.0.0.1", 11434).message


def test_service_stopped_says_start() -> None:
    outcome = checks.check_service("ollama", True, False, None, "ollama")
    assert outcome.status == "fail" and "systemctl start ollama" in outcome.message
    assert checks.check_service("ollama", True, True, "root", "ollama").status == "fail"
    assert checks.check_service("ollama", True, True, "ollama", "ollama").status == "pass"


def test_api_version_from_recorded_body() -> None:
    body = '{"version":"0.30.11"}'
    assert checks.check_api_version(0, body, "0.30.11", "u").status == "pass"
    assert "says 0.30.11, pinned 0.34.2" in checks.check_api_version(0, body, "0.34.2",
                                                                      "u").message
    refused = checks.check_api_version(7, "curl: (7) Failed to connect", "0.34.2", "u")
    assert refused.status == "fail" and "Failed to connect" in refused.message


def test_firewall_missing_and_present() -> None:
    assert checks.check_firewall(None, ["10.0.0.0/24"], "gpulab_ollama").status == "fail"
    table = "table inet gpulab_ollama {\n ip saddr { 10.0.0.0/24 } tcp dport 11434 accept\n}"
    assert checks.check_firewall(table, ["10.0.0.0/24"], "gpulab_ollama").status == "pass"


def test_ollama_version_link() -> None:
    outcome = checks.check_ollama_version("/opt/ollama/0.33.0/bin/ollama", "0.34.2", "/l")
    assert outcome.status == "fail" and "not /opt/ollama/0.34.2/bin/ollama" in outcome.message


# --- models (Ollama's JSON) ---------------------------------------------------------------


def test_models_listed_with_planned_digest_from_recorded_tags() -> None:
    body = recorded("api-tags-two-models.txt")
    digest = json.loads(body)["models"][1]["digest"]
    assert checks.check_models_listed(body, {"qwen3:0.6b": digest}).status == "pass"
    assert checks.check_models_listed(body, {"qwen3:0.6b": None}).status == "pass"
    wrong = checks.check_models_listed(body, {"qwen3:0.6b": "sha256:" + "0" * 64})
    assert wrong.status == "fail" and "7df6b6e09427, planned 000000000000" in wrong.message


def test_model_missing_from_tags() -> None:
    outcome = checks.check_models_listed(recorded("api-tags-two-models.txt"), {"qwen2.5:7b": None})
    assert outcome.status == "fail" and "not pulled: qwen2.5:7b" in outcome.message


def test_model_on_gpu_from_recorded_ps() -> None:
    outcome = checks.check_model_on_gpu(recorded("api-ps-2x-gpu-granite-llama.txt"),
                                        "llama3.2:3b")
    assert outcome.status == "pass" and "100% on the GPU" in outcome.message


def test_model_on_cpu_from_recorded_ps() -> None:
    outcome = checks.check_model_on_gpu(recorded("api-ps-cpu-only-llama3.2.txt"), "llama3.2:1b")
    assert outcome.status == "fail" and "size_vram 0" in outcome.message


def test_model_not_loaded() -> None:
    outcome = checks.check_model_on_gpu('{"models":[]}', "qwen2.5:7b")
    assert outcome.status == "fail" and "not loaded" in outcome.message


def test_embedding_dimension() -> None:
    body = json.dumps({"model": "m", "embeddings": [[0.0] * 1024]})
    assert checks.check_embedding(body, "m", 1024).status == "pass"
    short = checks.check_embedding(json.dumps({"embeddings": [[0.0] * 768]}), "m", 1024)
    assert short.status == "fail" and "768 dimensions, expected 1024" in short.message
    assert checks.check_embedding('{"error":"model not found"}', "m", 1024).status == "fail"


def test_listed_model_with_a_blob_missing_on_disk_fails_naming_it() -> None:
    body = recorded("api-tags-two-models.txt")
    outcome = checks.check_models_listed(body, {"qwen3:0.6b": None},
                                         {"qwen3:0.6b": "copy 0.52 GB from the instructor's store"})
    assert outcome.status == "fail"
    assert "incomplete on disk: qwen3:0.6b (copy 0.52 GB" in outcome.message
    assert "deploy/gpu_host.py" in outcome.message


# --- vLLM (its OpenAI-compatible API) -----------------------------------------------------


def test_vllm_serves_the_planned_model() -> None:
    body = json.dumps({"object": "list", "data": [
        {"id": "Qwen/Qwen2.5-7B-Instruct-AWQ", "object": "model", "owned_by": "vllm"}]})
    url = "http://127.0.0.1:8000/v1/models"
    assert checks.check_vllm_models(0, body, "Qwen/Qwen2.5-7B-Instruct-AWQ", url).status == "pass"
    other = checks.check_vllm_models(0, body, "Qwen/Qwen2.5-7B-Instruct", url)
    assert other.status == "fail"
    assert "serves Qwen/Qwen2.5-7B-Instruct-AWQ, planned" in other.message
    down = checks.check_vllm_models(7, "curl: (7) Failed to connect", "m", url)
    assert down.status == "fail" and "Failed to connect" in down.message


def test_vllm_without_the_key_must_get_401() -> None:
    assert checks.check_vllm_key_required("401", "u").status == "pass"
    open_door = checks.check_vllm_key_required("200", "u")
    assert open_door.status == "fail" and "answered 200" in open_door.message


def test_readme_troubleshooting_names_every_check() -> None:
    from gpulab.verify.probes import CHECK_NAMES

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name in CHECK_NAMES if f"| {name} |" not in readme]
    assert not missing, f"README's troubleshooting table lacks {missing}"


def test_kernel_hold_opt_out_expects_no_hold_and_no_blacklist() -> None:
    facts = HostFacts(hostname="pc", os=OsInfo(id="ubuntu", version_id="24.04"),
                      kernel="6.8.0-90-generic",
                      pci_gpus=(PciGpu(slot="01:00.0", device_id="2484",
                                       name="GA104 [GeForce RTX 3070]"),))
    settings = parse_settings("pc", {"driver_hold_kernel": False})
    # the n/a path never reaches the host
    subject = Subject("pc", None, facts, settings, make_plan("pc", facts, settings), "test")
    for probe in (probe_driver_held, probe_blacklist):
        outcome = probe(subject)
        assert outcome.status == "n/a" and "driver_hold_kernel: false" in outcome.message


# --- kernels and their modules ------------------------------------------------------------


def test_a_kernel_without_its_module_fails_naming_it() -> None:
    kernels = checks.parse_kernel_modules("6.8.0-90-generic yes\n6.8.0-91-generic no\n")
    outcome = checks.check_every_kernel_has_the_module(kernels, "6.8.0-90-generic", "upgrade")
    assert outcome.status == "fail"
    assert "no nvidia module for kernel 6.8.0-91-generic: booting it" in outcome.message
    running = checks.check_every_kernel_has_the_module({"6.1.0-26-amd64": False},
                                                        "6.1.0-26-amd64", "upgrade")
    assert "6.1.0-26-amd64 (running)" in running.message


def test_every_kernel_with_its_module_passes() -> None:
    outcome = checks.check_every_kernel_has_the_module(
        {"6.8.0-90-generic": True, "6.8.0-91-generic": True}, "6.8.0-91-generic", "upgrade")
    assert outcome == checks.passed(
        "nvidia module present for 6.8.0-90-generic, 6.8.0-91-generic")
    assert checks.check_every_kernel_has_the_module({}, "x", "upgrade").status == "fail"
