"""The models plan: present / to pull / to copy, bytes to move, GPU fit, unlisted models."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpulab.facts.model import HostFacts, ModelStoreFacts, OsInfo, SmiGpu, SmiStatus, StoreManifest
from gpulab.facts.models import VERIFIED_STAMP, OllamaModelStore
from gpulab.models.names import parse_model_name
from gpulab.models.store import StoredModel, parse_manifest
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
    a, b, c = ("sha256-" + x * 64 for x in "abc")
    output = [f"manifest {QWEN_PATH} {encoded}", "manifest bad/x/y/z not-base64!",
              f"blob {a} 1234 1733330000.1234567890 stamped",
              f"blob {b} 5 1733330001.0000000000 corrupt",
              f"blob {c} 7 1733330002.5000000000 sound", "blob sha256-d x 1 sound"]
    facts = OllamaModelStore().process(output)
    assert facts.manifests == (StoreManifest(path=QWEN_PATH, data_base64=encoded),)
    assert facts.blobs == {a: 1234, b: 5, c: 7}
    assert facts.corrupt == (b,)
    assert facts.unstamped == (f"{c} 7 1733330002.5000000000",)
    assert "'/srv/my models'/manifests" in OllamaModelStore().command("/srv/my models")


def test_store_fact_hashes_only_blobs_the_stamp_does_not_vouch_for(tmp_path: Path) -> None:
    """The fact's own shell, run here: sound, corrupt (same size), stamped, partials left out."""
    root = tmp_path / "my models"
    (root / "blobs").mkdir(parents=True)
    good, bad = b"a sound blob", b"a corrupt blob"
    good_name = "sha256-" + hashlib.sha256(good).hexdigest()
    bad_name = "sha256-" + hashlib.sha256(bad).hexdigest()
    (root / "blobs" / good_name).write_bytes(good)
    (root / "blobs" / bad_name).write_bytes(b"A corrupt blob")  # one byte off, same size
    (root / "blobs" / f"{good_name}-partial").write_bytes(b"x")

    def gather() -> ModelStoreFacts:
        fact = OllamaModelStore()
        done = subprocess.run(["sh", "-c", fact.command(str(root))], capture_output=True,
                              text=True, check=True)
        return fact.process(done.stdout.splitlines())

    first = gather()
    assert first.blobs == {good_name: len(good), bad_name: len(bad)}
    assert first.corrupt == (bad_name,)
    assert [line.split()[:2] for line in first.unstamped] == [[good_name, str(len(good))]]
    assert not first.sound(bad_name, len(bad)) and first.sound(good_name, len(good))
    # gpulab recorded the sound blob: the next gather trusts it without hashing
    (root / VERIFIED_STAMP).write_text(first.unstamped[0] + "\n")
    assert gather().unstamped == () and gather().corrupt == (bad_name,)
    # a blob rewritten since (new mtime) is hashed again
    (root / "blobs" / good_name).write_bytes(b"A sound blob")
    assert set(gather().corrupt) == {good_name, bad_name}


def test_seeded_plan_compares_the_hosts_manifest_with_the_stores(
    qwen: PublishedModel, tmp_path: Path
) -> None:
    """A host holding a complete but different qwen2.5:7b is given the store's copy."""
    newer = RegistryStandIn(tmp_path / "newer").publish("qwen2.5:7b", payload_bytes=8192)
    assert newer.digest != qwen.digest
    source = {parse_model_name("qwen2.5:7b"): StoredModel(
        parse_model_name("qwen2.5:7b"), newer.manifest, parse_manifest(newer.manifest, "store"))}
    facts = _facts(_store(qwen))
    (fit,) = plan_models(facts, parse_settings("pc-1", {
        "models": ["qwen2.5:7b"], "models_distribution": "seeded"}), source)
    shared = {d for d in newer.blobs if qwen.blobs.get(d) == newer.blobs[d]}
    lacking = sum(size for digest, size in newer.blobs.items() if digest not in shared)
    assert fit.action == "copy"
    assert (fit.size_bytes, fit.size_exact) == (newer.total_size, True)
    assert fit.bytes_to_move == lacking + len(newer.manifest)
    assert f"{qwen.digest[:12]} is not the store's {newer.digest[:12]}" in fit.reason
    # the same manifest as the store's: present; not on the host: sized from the store
    same = {name: StoredModel(name, qwen.manifest, parse_manifest(qwen.manifest, "store"))
            for name in source}
    seeded = parse_settings("pc-1", {"models": ["qwen2.5:7b"], "models_distribution": "seeded"})
    assert plan_models(facts, seeded, same)[0].action == "present"
    (fresh,) = plan_models(_facts(ModelStoreFacts()), seeded, source)
    assert (fresh.size_bytes, fresh.bytes_to_move) == (newer.total_size,
                                                        newer.total_size + len(newer.manifest))


def test_a_same_size_corrupt_blob_is_brought_again(qwen: PublishedModel) -> None:
    held = _store(qwen)
    blob = qwen.model_digest.replace(":", "-")
    corrupt = held.model_copy(update={"corrupt": (blob,)})
    for distribution, verb in (("seeded", "copy"), ("direct", "pull")):
        (fit,) = _plan(_facts(corrupt), models_distribution=distribution)
        assert (fit.action, fit.bytes_to_move) == (verb, qwen.blobs[qwen.model_digest])
        assert fit.corrupt_blobs == (blob,)
        assert "1 corrupt blob(s) replaced" in fit.reason
