"""The room cache, planned: the cache's own deploy, and a host that takes everything from it."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from gpulab.deploys.apt import apt_base
from gpulab.deploys.context import GpulabDataError
from gpulab.deploys.cuda import cuda_toolkit
from gpulab.deploys.models import course_models
from gpulab.deploys.ollama import ollama
from gpulab.deploys.room_cache import room_cache
from tests.fixtures.ollama_registry import PublishedModel
from tests.plan.harness import PlannedHost, plan_deploy
from tests.plan.test_plan_models import MODELS, QWEN_PATH, seeded  # noqa: F401  (fixture)

pytestmark = pytest.mark.plan

ROOM = {"room_cache": "10.0.0.5", "room_cidrs": ["10.0.0.0/24", "10.0.1.0/24"]}
ROOT = "/srv/gpulab-cache"


def _cache(store: Path, **data: object) -> PlannedHost:
    return plan_deploy(room_cache, "debian12-gtx1650.json", {
        **ROOM, "models": ["qwen2.5:7b"], "models_store": str(store), **data,
    }, {"uname -s": "Linux"})


def test_the_cache_serves_the_room_only_and_fills_from_the_upstreams(
    seeded: tuple[Path, PublishedModel],  # noqa: F811
) -> None:
    store, model = seeded
    planned = _cache(store)
    assert "apt-cacher-ng nginx curl" in planned.op("apt-cacher-ng, nginx").text
    acng = planned.op("apt-cacher-ng: port").text
    assert "Port: 3142" in acng and "\nReportPage:\n" in acng and "UseWrap: 1" in acng
    assert "AllowUserPorts: 80 443\n" in acng
    assert ("apt-cacher-ng: 127.0.0.1 10.0.0.0/255.255.255.0 10.0.1.0/255.255.255.0"
            in planned.op("hosts.allow").text)
    assert "apt-cacher-ng: ALL" in planned.op("hosts.deny").text
    site = planned.op("nginx: the room cache's site").text
    assert f"root {ROOT};" in site
    for allowed in ("allow 127.0.0.1;", "allow 10.0.0.0/24;", "allow 10.0.1.0/24;",
                    "deny all;", "limit_except GET { deny all; }",
                    "add_header Location $request_uri always;"):
        assert allowed in site, allowed
    # The upstreams themselves (the keys' defaults), never the cache's own address.
    release = planned.op("Room cache: Ollama 0.34.2 x86_64").text
    assert "https://github.com/ollama/ollama/releases/download/v0.34.2/" in release
    assert f"{ROOT}/ollama/v0.34.2" in release
    keyring = planned.op("cuda-keyring for ubuntu2404").text
    assert ("https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/"
            "cuda-keyring_1.1-1_all.deb") in keyring
    assert [n for n in planned.names() if "cuda-keyring for" in n] == [
        f"gpulab room cache | Room cache: cuda-keyring for {d}"
        for d in ("ubuntu2204", "ubuntu2404", "debian12", "wsl-ubuntu")]
    sent = planned.op("sent by rsync").text
    for digest in model.blobs:
        assert f"'--include={digest.replace(':', '-')}'" in sent
        placed = planned.op("checked and placed").text
        assert f"mv -f {ROOT}/models/.gpulab-incoming/{digest.replace(':', '-')} " in placed
        assert "chown root:root" in placed
    assert f"{ROOT}/models/manifests/{QWEN_PATH}" in planned.op("qwen2.5:7b manifest").text
    assert planned.names()[-1].endswith("marker (written last)")


def test_without_a_store_the_cache_fetches_the_models_from_the_registry_itself(
    seeded: tuple[Path, PublishedModel],  # noqa: F811
) -> None:
    _store, model = seeded
    manifest_url = "https://registry.ollama.ai/v2/library/qwen2.5/manifests/7b"
    answer = base64.b64encode(model.manifest).decode()
    planned = plan_deploy(room_cache, "debian12-gtx1650.json", {**ROOM, "models": ["qwen2.5:7b"]},
                          {"uname -s": "Linux", re.compile(r"-H 'Accept: application/vnd"): answer})
    for digest in model.blobs:
        blob = planned.op(f"blob {digest[7:19]} from https://registry.ollama.ai").text
        assert f"https://registry.ollama.ai/v2/library/qwen2.5/blobs/{digest}" in blob
        assert f"echo {digest[7:]}'  '{ROOT}/models/blobs/.gpulab-" in blob
    written = planned.op("qwen2.5:7b manifest (written last)").text
    assert f"upload {ROOT}/models/manifests/{QWEN_PATH}" in written
    assert model.manifest.decode() in written
    down = plan_deploy(room_cache, "debian12-gtx1650.json", {**ROOM, "models": ["qwen2.5:7b"]},
                       {"uname -s": "Linux", re.compile(r"-H 'Accept: application/vnd"):
                        "curl exit 6"})
    assert "blob" not in " ".join(down.names())
    assert any(f"qwen2.5:7b from {manifest_url.split('/v2')[0]}" in n for n in down.names())


def test_the_cache_needs_the_rooms_networks() -> None:
    with pytest.raises(GpulabDataError, match="room_cidrs"):
        plan_deploy(room_cache, "debian12-gtx1650.json", {}, {"uname -s": "Linux"})


def test_a_host_takes_apt_nvidia_ollama_and_models_from_the_cache(
    seeded: tuple[Path, PublishedModel],  # noqa: F811
) -> None:
    store, model = seeded
    data = {**ROOM, "models": ["qwen2.5:7b"], "models_distribution": "seeded",
            "models_store": str(store)}
    answers = {"uname -s": "Linux", re.compile(r"curl -sS -o /dev/null"): "200"}
    base = plan_deploy(apt_base, "ubuntu2404-rtx5090.json", data, answers)
    assert "http://10.0.0.5:3142" in base.op("apt proxy").text
    down = plan_deploy(apt_base, "ubuntu2404-rtx5090.json", data, {
        "uname -s": "Linux", re.compile(r"curl -sS -o /dev/null"): "curl exit 7"})
    assert [name.rpartition(" | ")[2] for name in down.names()] == [
        "room cache 10.0.0.5 answers"]  # nothing else is planned on a host that cannot
    cuda = plan_deploy(cuda_toolkit, "ubuntu2404-rtx5090.json", data, {"uname -s": "Linux"})
    assert ("http://10.0.0.5/nvidia/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb"
            in cuda.op("cuda-keyring from").text)
    assert ("http://HTTPS///developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/"
            "x86_64/ /" in cuda.op("NVIDIA CUDA repository").text)
    served = plan_deploy(ollama, "ubuntu2404-rtx5090.json", data, {"uname -s": "Linux"})
    assert "http://10.0.0.5/ollama/v0.34.2/ollama-linux-amd64.tar.zst" in served.text
    models = plan_deploy(course_models, "ubuntu2404-rtx5090.json", data, {"uname -s": "Linux"})
    for digest in model.blobs:
        blob = models.op(f"blob {digest[7:19]} from the room cache").text
        assert f"http://10.0.0.5/models/blobs/{digest.replace(':', '-')}" in blob
        assert "cannot download it" in blob
        assert "upload" not in blob  # nothing is sent from the instructor's machine
    assert (f"http://10.0.0.5/models/manifests/{QWEN_PATH}"
            in models.op("manifest from the room cache").text)


def test_without_a_store_here_a_host_reads_the_manifest_from_the_cache(
    seeded: tuple[Path, PublishedModel],  # noqa: F811
) -> None:
    _store, model = seeded
    data = {**ROOM, "models": ["qwen2.5:7b"], "models_distribution": "seeded"}
    answer = base64.b64encode(model.manifest).decode()
    planned = plan_deploy(course_models, "ubuntu2404-rtx5090.json", data, {
        "uname -s": "Linux", re.compile(r"-H 'Accept: application/vnd"): answer})
    names = " ".join(planned.names())
    assert all(f"blob {digest[7:19]} from the room cache" in names for digest in model.blobs)
    manifest = planned.op("qwen2.5:7b manifest from the room cache").text
    assert f"http://10.0.0.5/models/manifests/{QWEN_PATH}" in manifest
    missing = plan_deploy(course_models, "ubuntu2404-rtx5090.json", data, {
        "uname -s": "Linux", re.compile(r"-H 'Accept: application/vnd"): "curl exit 22"})
    assert [n.rpartition(" | ")[2] for n in missing.names()][-1] == (
        "Models: qwen2.5:7b on the room cache")
