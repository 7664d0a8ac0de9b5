"""The vLLM deploy, planned against recorded facts: the exact commands and files it makes.

pyinfra's own facts see an empty host except for the canned answers in ``BASE``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from gpulab.deploys.context import GpulabDataError
from gpulab.deploys.vllm import vllm
from tests.plan.harness import PlannedHost, plan_deploy

pytestmark = pytest.mark.plan

BASE: dict[Any, Any] = {
    "uname -s": "Linux", re.compile(r"command -v \S*useradd"): "/usr/sbin/useradd",
}
AWQ = "Qwen/Qwen2.5-7B-Instruct-AWQ"
ENABLED = {"vllm_enabled": True, "vllm_model": AWQ}


def _plan(facts: str, data: dict[str, Any] | None = None,
          responses: dict[Any, Any] | None = None) -> PlannedHost:
    return plan_deploy(vllm, facts, {**ENABLED, **(data or {})}, {**BASE, **(responses or {})})


def test_default_wheel_venv_model_and_unit_on_a_580_host() -> None:
    planned = _plan("ubuntu2404-rtx4090-580.json")
    assert "python3-venv" in planned.op("vLLM's tools").text
    assert "useradd -d /var/lib/vllm -s /bin/false -g vllm -r -m vllm" in (
        planned.op("vllm user").text)
    venv = planned.op("vLLM virtualenv /opt/vllm: vllm==0.26.0").text
    assert "test -x /opt/vllm/bin/pip || python3 -m venv /opt/vllm" in venv
    assert "/opt/vllm/bin/pip install --retries 10 --timeout 60 vllm==0.26.0" in venv
    assert "--index-url" not in venv and "--extra-index-url" not in venv
    assert "printf %s 'vllm==0.26.0 from default\n' > /opt/vllm/.gpulab-installed" in venv
    model = planned.op(f"vLLM model {AWQ}").text
    assert ("runuser -u vllm -- env HF_HOME=/var/lib/vllm/huggingface "
            "MODELSCOPE_CACHE=/var/lib/vllm/huggingface/modelscope "
            f"/opt/vllm/bin/hf download {AWQ}") in model
    unit = planned.op("vLLM unit").text
    assert "User=vllm" in unit and "After=ollama.service" in unit
    assert (f"ExecStart=/opt/vllm/bin/vllm serve {AWQ} --host 127.0.0.1 --port 8000 "
            "--gpu-memory-utilization 0.78 --max-model-len 8192") in unit
    assert 'Environment="HF_HOME=/var/lib/vllm/huggingface"' in unit
    assert "EnvironmentFile" not in unit and "api-key" not in unit
    assert planned.op("no /etc/gpulab/vllm.env").commands == ()  # none to remove yet
    assert "systemctl start vllm.service" in planned.op("vLLM restarted").text
    assert "systemctl enable vllm.service" in planned.op("running and enabled").text


def test_variant_index_mirror_hub_and_proxy_on_a_550_host() -> None:
    planned = _plan("ubuntu2204-rtx4090-550.json", {
        "driver_branch": 550, "driver_source": "cuda-repo",
        "vllm_pip_index_url": "http://10.0.0.5:3141/simple",
        "vllm_hub": "modelscope", "https_proxy": "http://10.0.0.5:3128",
        "vllm_hf_endpoint": "http://10.0.0.5:8090",
    })
    venv = planned.op("vLLM virtualenv").text
    assert ("pip install --retries 10 --timeout 60 --index-url http://10.0.0.5:3141/simple "
            "--extra-index-url https://wheels.vllm.ai/0.26.0/cu129 --extra-index-url "
            "https://download.pytorch.org/whl/cu129 --trusted-host 10.0.0.5:3141 "
            "vllm==0.26.0+cu129 modelscope") in venv
    assert "env HTTPS_PROXY=http://10.0.0.5:3128" in venv
    model = planned.op("vLLM model").text
    assert f"/opt/vllm/bin/modelscope download --model {AWQ}" in model
    unit = planned.op("vLLM unit").text
    assert 'Environment="VLLM_USE_MODELSCOPE=True"' in unit
    assert 'Environment="HF_ENDPOINT=http://10.0.0.5:8090"' in unit


def test_key_from_the_instructors_environment_goes_to_a_root_only_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROOM_VLLM_KEY", "k-123")
    planned = _plan("ubuntu2404-rtx4090-580.json", {
        "vllm_host": "0.0.0.0", "vllm_api_key_env": "ROOM_VLLM_KEY",
    })
    key = planned.op("vLLM API key (/etc/gpulab/vllm.env, root only)").text
    assert "upload /etc/gpulab/vllm.env\nVLLM_API_KEY=k-123\n" in key
    assert "chmod 600 /etc/gpulab/vllm.env" in key
    assert "chown root:root /etc/gpulab/vllm.env" in key
    unit = planned.op("vLLM unit").text
    assert "EnvironmentFile=/etc/gpulab/vllm.env" in unit and "k-123" not in unit
    assert "--host 0.0.0.0" in unit


def test_missing_or_unsafe_key_stops_before_anything_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ROOM_VLLM_KEY", raising=False)
    with pytest.raises(GpulabDataError, match="ROOM_VLLM_KEY is not set on this machine"):
        _plan("ubuntu2404-rtx4090-580.json", {"vllm_api_key_env": "ROOM_VLLM_KEY"})
    with pytest.raises(GpulabDataError, match="without spaces, quotes"):
        _plan("ubuntu2404-rtx4090-580.json", {"vllm_api_key": "a b"})


def test_installed_venv_and_downloaded_model_are_not_redone() -> None:
    planned = _plan("ubuntu2404-rtx4090-580.json", {"vllm_model_download": True}, {
        re.compile(r"/opt/vllm/\.gpulab-installed"): ["vllm==0.26.0 from default"],
        re.compile(r"\.gpulab-downloaded/Qwen--Qwen2\.5-7B-Instruct-AWQ"): [AWQ],
    })
    assert planned.op("vLLM virtualenv").commands == ()
    assert planned.op("vLLM model").commands == ()


def test_another_pin_reinstalls_and_download_can_be_left_to_vllm() -> None:
    planned = _plan("ubuntu2404-rtx4090-580.json", {
        "vllm_version": "0.9.0", "vllm_model_download": False,
    }, {re.compile(r"/opt/vllm/\.gpulab-installed"): ["vllm==0.26.0 from default"]})
    assert "pip install --retries 10 --timeout 60 vllm==0.9.0" in (
        planned.op("vLLM virtualenv").text)
    assert not any("vLLM model" in name for name in planned.names())


def test_disabled_after_enabled_stops_and_keeps_venv_and_model() -> None:
    planned = plan_deploy(vllm, "ubuntu2404-rtx4090-580.json", {}, {
        **BASE, re.compile(r"systemctl show .*SubState"): ["Id=vllm.service",
                                                           "SubState=running"],
        re.compile(r"systemctl show .*UnitFileState"): ["Id=vllm.service",
                                                        "UnitFileState=enabled"],
    })
    stop = planned.op("vLLM stopped and disabled").text
    assert "systemctl stop vllm.service" in stop
    assert "systemctl disable vllm.service" in stop
    names = planned.names()
    assert names.index("gpulab vLLM | no /etc/systemd/system/vllm.service") < names.index(
        "gpulab vLLM | systemd reloaded")
    assert not any(name.endswith("no /opt/vllm") for name in planned.names())


def test_disabled_with_remove_deletes_venv_model_and_user() -> None:
    planned = plan_deploy(vllm, "debian12-nogpu.json", {"vllm_remove": True}, BASE)
    assert any(name.endswith("no /opt/vllm") for name in planned.names())
    assert any(name.endswith("no /var/lib/vllm/huggingface") for name in planned.names())
    assert any(name.endswith("no vllm user") for name in planned.names())
