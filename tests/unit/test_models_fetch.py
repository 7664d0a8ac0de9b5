"""``gpulab models fetch`` and ``import`` against the stand-in registry (tests/fixtures)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpulab.cli import main
from gpulab.models.names import parse_model_name
from gpulab.models.store import Store, sha256_file
from tests.fixtures.ollama_registry import MANIFEST_MEDIA_TYPE, PublishedModel, RegistryStandIn

pytestmark = pytest.mark.unit

QWEN = "qwen2.5:7b"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryStandIn]:
    with RegistryStandIn(tmp_path / "registry") as stand_in:
        yield stand_in


@pytest.fixture
def qwen(registry: RegistryStandIn) -> PublishedModel:
    return registry.publish(QWEN, payload_bytes=256 * 1024)


def fetch(registry: RegistryStandIn, store: Path, *names: str) -> int:
    return main(["models", "fetch", *names, "--store", str(store), "--registry", registry.url])


def assert_complete(store: Path, model: PublishedModel) -> None:
    name = parse_model_name(model.name)
    assert (store / name.manifest_path).read_bytes() == model.manifest
    for digest in model.blobs:
        blob = store / "blobs" / digest.replace(":", "-")
        assert sha256_file(blob) == digest[7:]
    assert not list((store / "blobs").glob("*partial*"))


def model_blob_gets(registry: RegistryStandIn, model: PublishedModel) -> list[str | None]:
    path = registry._blob_url_path(model.model_digest)
    return [record.range for record in registry.cdn.requests_for(path, "GET")]


def test_fetch_through_a_mirror_keeps_the_canonical_name(
    registry: RegistryStandIn, qwen: PublishedModel, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    assert fetch(registry, store, QWEN) == 0
    assert_complete(store, qwen)
    assert not (store / "manifests" / f"127.0.0.1:{registry.port}").exists()
    manifest_gets = [r for r in registry.requests if "/manifests/" in r.path]
    assert [(r.accept, r.status) for r in manifest_gets] == [(MANIFEST_MEDIA_TYPE, 200)]
    blob_gets = [r for r in registry.requests if "/blobs/" in r.path]
    assert {r.status for r in blob_gets} == {307}
    # Every blob byte came from the CDN host the registry redirected to, not the registry.
    assert registry.cdn.host == "127.0.0.2"
    assert registry.blob_bytes_served() == qwen.total_size


def test_registry_refuses_a_manifest_request_without_accept(
    registry: RegistryStandIn, qwen: PublishedModel
) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{registry.url}/v2/library/qwen2.5/manifests/7b")
    assert refused.value.code == 400
    assert b"MANIFEST_INVALID" in refused.value.read()


def test_a_cut_transfer_resumes_with_a_range_request(
    registry: RegistryStandIn, qwen: PublishedModel, tmp_path: Path
) -> None:
    half = qwen.blobs[qwen.model_digest] // 2
    registry.cut_blob_once(qwen.model_digest, after_bytes=half)
    store = tmp_path / "store"
    assert fetch(registry, store, QWEN) == 0
    assert_complete(store, qwen)
    assert model_blob_gets(registry, qwen) == [None, f"bytes={half}-"]
    assert registry.blob_bytes_served() == qwen.total_size  # nothing sent twice


def test_second_fetch_downloads_nothing(
    registry: RegistryStandIn, qwen: PublishedModel, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    assert fetch(registry, store, QWEN) == 0
    registry.cdn.clear_log()
    assert fetch(registry, store, QWEN) == 0
    assert registry.cdn.requests == []
    assert_complete(store, qwen)


def test_a_corrupt_blob_is_found_and_fetched_again(
    registry: RegistryStandIn, qwen: PublishedModel, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    assert fetch(registry, store, QWEN) == 0
    blob = store / "blobs" / qwen.model_digest.replace(":", "-")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    registry.cdn.clear_log()
    assert fetch(registry, store, QWEN) == 0
    assert_complete(store, qwen)
    fetched = {r.path for r in registry.cdn.requests}
    assert fetched == {registry._blob_url_path(qwen.model_digest)}


def test_a_registry_serving_bad_bytes_fails_with_the_reason(
    registry: RegistryStandIn, qwen: PublishedModel, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    served = registry.cdn.root / registry._blob_url_path(qwen.model_digest).lstrip("/")
    served.write_bytes(served.read_bytes()[:-1] + b"!")
    store = tmp_path / "store"
    assert fetch(registry, store, QWEN) == 1
    err = capsys.readouterr().err
    assert err.startswith("qwen2.5:7b: blob sha256:") and "fetch it again" in err
    assert not (store / parse_model_name(QWEN).manifest_path).exists()
    assert not (store / "blobs" / qwen.model_digest.replace(":", "-")).exists()


def test_an_unknown_model_fails_with_the_reason(
    registry: RegistryStandIn, qwen: PublishedModel, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert fetch(registry, tmp_path / "store", QWEN, "nosuch:1b") == 1
    out, err = capsys.readouterr()
    assert out.startswith("qwen2.5:7b: complete")
    assert "nosuch:1b:" in err and "no such model or tag" in err


def test_fetch_takes_models_and_registry_from_the_inventory(
    registry: RegistryStandIn, tmp_path: Path
) -> None:
    bge = registry.publish("znbang/bge:large-zh-v1.5-f16", architecture="bert")
    inventory = tmp_path / "room.py"
    inventory.write_text(
        f"pcs = (['pc-1', 'pc-2'], {{'models': ['znbang/bge:large-zh-v1.5-f16'], "
        f"'models_registry': '{registry.url}'}})\n")
    store = tmp_path / "store"
    # Loading an inventory imports pyinfra, whose gevent patches would stall this process's
    # stand-in servers: the command runs in its own process, as it does for a user.
    run = subprocess.run([sys.executable, "-m", "gpulab.cli", "models", "fetch", "--inventory",
                          str(inventory), "--store", str(store)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert_complete(store, bge)


def test_import_checks_every_blob(
    registry: RegistryStandIn, qwen: PublishedModel, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    usb = tmp_path / "usb"
    assert fetch(registry, usb, QWEN) == 0
    store = tmp_path / "store"
    assert main(["models", "import", str(usb), "--store", str(store)]) == 0
    assert_complete(store, qwen)
    assert [m.name.short for m in Store(store).models()] == [QWEN]

    # A corrupt copy on the stick is refused, and the target gets no manifest for it.
    other = tmp_path / "other"
    blob = usb / "blobs" / qwen.model_digest.replace(":", "-")
    blob.write_bytes(b"x" * blob.stat().st_size)
    assert main(["models", "import", str(usb), QWEN, "--store", str(other)]) == 1
    assert "pull the model there again" in capsys.readouterr().err
    assert list(Store(other).models()) == []
