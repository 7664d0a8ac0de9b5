"""The models plan: present / to pull / to copy, bytes to move, GPU fit, unlisted models."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from gpulab.facts.model import HostFacts, ModelStoreFacts, OsInfo, SmiGpu, SmiStatus, StoreManifest
from gpulab.facts.models import OllamaModelStore
from gpulab.plan.models import plan_models
from gpulab.settings import parse_settings
from tests.fixtures.ollama_registry import PublishedModel, RegistryStandIn

pytestmark = pytest.mark.unit

BOOKWORM = OsInfo(id="debian", version_id="12", codename="bookworm")
QWEN_PATH = "registry.ollama.ai/library/qwen2.5/7b"


@pytest.fixture
def qwen(tmp_path: Path) -> PublishedModel:
    # Not started: publishing only writes the model and its manifest.
    return RegistryStandIn(tmp_path).publish("qwen2.5:7b", payload_bytes=4096)


def _facts(store: ModelStoreFacts, vram_mib: int | None = 24576) -> HostFacts:
    gpus = () if vram_mib is None else (
        SmiGpu(name="NVIDIA GeForce RTX 4090", driver_version="580.95.05",
               memory_total_mib=vram_mib),)
    return HostFacts(hostname="pc-1", os=BOOKWORM, kernel="6.1.0-40-amd64",
                     smi=SmiStatus(exit_code=0 if gpus else None, gpus=gpus),
                     model_store=store)


def _store(model: PublishedModel, path: str = QWEN_PATH, drop: int = 0) -> ModelStoreFacts:
    blobs = {digest.replace(":", "-"): size for digest, size in model.blobs.items()}
    for digest in list(blobs)[:drop]:
        del blobs[digest]
    return ModelStoreFacts(manifests=(StoreManifest(
        path=path, data_base64=base64.b64encode(model.manifest).decode()),), blobs=blobs)


def _plan(facts: HostFacts, **data: Any) -> Any:
    return plan_models(facts, parse_settings("pc-1", {"models": ["qwen2.5:7b"], **data}))


def test_a_model_not_on_the_host_is_pulled_or_copied_at_the_catalogue_size() -> None:
    (direct,) = _plan(_facts(ModelStoreFacts()))
    assert (direct.action, direct.bytes_to_move, direct.size_exact) == ("pull", 4_683_087_332,
                                                                         True)
    assert direct.fits_gpu is True
    assert "from https://registry.ollama.ai" in direct.reason
    (seeded,) = _plan(_facts(ModelStoreFacts()), models_distribution="seeded")
    assert seeded.action == "copy" and "instructor's store" in seeded.reason


def test_a_complete_model_is_present_and_sized_from_its_manifest(qwen: PublishedModel) -> None:
    (fit,) = _plan(_facts(_store(qwen)), models_distribution="seeded")
    assert (fit.action, fit.bytes_to_move) == ("present", 0)
    assert (fit.size_bytes, fit.size_exact) == (qwen.total_size, True)
    assert fit.manifest_digest == qwen.digest


def test_only_missing_blobs_move(qwen: PublishedModel) -> None:
    store = _store(qwen, drop=1)
    missing = qwen.total_size - sum(store.blobs.values())
    (fit,) = _plan(_facts(store), models_distribution="seeded")
    assert (fit.action, fit.bytes_to_move) == ("copy", missing)


def test_a_model_too_big_for_the_gpu_is_still_installed_and_said_to_be_slow() -> None:
    (fit,) = _plan(_facts(ModelStoreFacts(), vram_mib=4096))
    assert (fit.action, fit.fits_gpu) == ("pull", False)
    assert "runs partly on the CPU (slowly)" in fit.reason
    (unknown,) = _plan(_facts(ModelStoreFacts(), vram_mib=None))
    assert unknown.fits_gpu is None and "GPU memory unknown" in unknown.reason


def test_models_no_longer_listed_are_kept_unless_told(qwen: PublishedModel) -> None:
    facts = _facts(_store(qwen, path="registry.ollama.ai/library/old/1b"))
    kept = _plan(facts)[1]
    assert (kept.name, kept.action) == ("old:1b", "keep")
    assert "models_remove_unlisted" in kept.reason
    removed = _plan(facts, models_remove_unlisted=True)[1]
    assert removed.action == "remove"


def test_store_fact_parses_manifests_and_blobs(qwen: PublishedModel) -> None:
    encoded = base64.b64encode(qwen.manifest).decode()
    output = [f"manifest {QWEN_PATH} {encoded}", "manifest bad/x/y/z not-base64!",
              "blob sha256-" + "a" * 64 + " 1234", "blob sha256-" + "b" * 64 + "-partial x"]
    facts = OllamaModelStore().process(output)
    assert facts.manifests == (StoreManifest(path=QWEN_PATH, data_base64=encoded),)
    assert facts.blobs == {"sha256-" + "a" * 64: 1234}
    assert "'/srv/my models'/manifests" in OllamaModelStore().command("/srv/my models")
