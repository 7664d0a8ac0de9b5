"""The course models deploy (seeded), planned against recorded facts and a real store."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from gpulab.deploys.context import GpulabDataError
from gpulab.deploys.models import course_models
from tests.fixtures.ollama_registry import PublishedModel, RegistryStandIn
from tests.plan.harness import FACTS_DIR, PlannedHost, plan_deploy

pytestmark = pytest.mark.plan

MODELS = "/usr/share/ollama/.ollama/models"
QWEN_PATH = "registry.ollama.ai/library/qwen2.5/7b"


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Path, PublishedModel]:
    """An instructor's store holding qwen2.5:7b (a tiny real GGUF), as fetch leaves it."""
    model = RegistryStandIn(tmp_path / "registry").publish("qwen2.5:7b")
    store = tmp_path / "store"
    for digest in model.blobs:
        source = tmp_path / "registry" / "cdn" / "ollama/docker/registry/v2/blobs/sha256"
        blob = source / digest[7:9] / digest[7:] / "data"
        (store / "blobs").mkdir(parents=True, exist_ok=True)
        (store / "blobs" / digest.replace(":", "-")).write_bytes(blob.read_bytes())
    (store / "manifests" / QWEN_PATH).parent.mkdir(parents=True)
    (store / "manifests" / QWEN_PATH).write_bytes(model.manifest)
    return store, model


def _host_facts(tmp_path: Path, model: PublishedModel, blobs: dict[str, int],
                **store: list[str]) -> str:
    """A recorded Debian 12 host whose store holds ``blobs`` and ``model``'s manifest
    (``store``: its ``corrupt`` and ``unstamped`` blobs)."""
    recorded = json.loads((FACTS_DIR / "debian12-gtx1650.json").read_text())
    recorded["facts"]["model_store"] = {
        "manifests": [{"path": QWEN_PATH,
                       "data_base64": base64.b64encode(model.manifest).decode()}],
        "blobs": blobs, **store,
    }
    path = tmp_path / "debian12-with-models.json"
    path.write_text(json.dumps(recorded))
    return str(path)


def _plan(facts: str, store: Path, **data: Any) -> PlannedHost:
    return plan_deploy(course_models, facts, {
        "models": ["qwen2.5:7b"], "models_distribution": "seeded", "models_store": str(store),
        **data,
    }, {"uname -s": "Linux"})


def _names(planned: PlannedHost) -> list[str]:
    """Operation names without the deploy's prefix (``gpulab course models | ``)."""
    return [name.rpartition(" | ")[2] for name in planned.names()]


def test_a_fresh_host_gets_every_blob_by_rsync_checked_then_the_manifest(
    seeded: tuple[Path, PublishedModel]
) -> None:
    store, model = seeded
    planned = _plan("debian12-gtx1650.json", store)
    names = _names(planned)
    incoming = f"{MODELS}/.gpulab-incoming"
    sent_name = next(name for name in names if name.endswith("sent by rsync"))
    assert sent_name.startswith(f"Models: qwen2.5:7b: {len(model.blobs)} blobs (")
    # The recorded host lacks rsync: installed before the copy.
    assert names.index("Models: rsync, for the copy from the instructor's store") \
        < names.index(sent_name)
    (sent,) = planned.op("sent by rsync").commands
    assert sent.startswith(f"RsyncCommand({store}/blobs/, {incoming}/, ['-rt', '--partial', ")
    assert sorted(re.findall(r"'--include=([^']+)'", sent)) \
        == sorted(digest.replace(":", "-") for digest in model.blobs)
    assert sent.endswith("\"--exclude='*'\"])")  # nothing else in the store travels
    # One command checks and places them all, then removes the staging directory.
    placed = planned.op("checked and placed").text
    assert names.index(sent_name) + 1 == names.index(
        next(name for name in names if name.endswith("checked and placed")))
    for digest in model.blobs:
        staged = f"{incoming}/{digest.replace(':', '-')}"
        assert f"echo {digest[7:]}'  '{staged} | sha256sum --check --status --strict" \
            in placed
        assert f"touch {staged} && mv -f {staged} {MODELS}/blobs/{digest.replace(':', '-')}" \
            in placed
        assert digest[7:19] in sent_name
    assert "chown ollama:ollama" in placed and placed.endswith(f"; rm -rf {incoming}")
    # Blobs first, the manifest last: uploaded by itself, checked, then renamed into place
    # (its directories made in the same command).
    assert names[-2:] == ["Models: qwen2.5:7b manifest", "Models: Ollama lists qwen2.5:7b"]
    manifest = planned.op("qwen2.5:7b manifest").text
    assert f"upload {MODELS}/blobs/.gpulab-7b" in manifest
    assert (f"install -d -o ollama -g ollama -m 755 {MODELS}/manifests/registry.ollama.ai "
            f"{MODELS}/manifests/registry.ollama.ai/library "
            f"{MODELS}/manifests/registry.ollama.ai/library/qwen2.5") in manifest
    assert f"mv -f {MODELS}/blobs/.gpulab-7b {MODELS}/manifests/{QWEN_PATH}" in manifest
    assert "/api/tags" in planned.op("Ollama lists").text


def test_a_host_missing_one_blob_gets_only_that_blob(
    seeded: tuple[Path, PublishedModel], tmp_path: Path
) -> None:
    store, model = seeded
    layers = sorted(model.blobs.items())
    held = {digest.replace(":", "-"): size for digest, size in layers[1:]}
    planned = _plan(_host_facts(tmp_path, model, held), store)
    sent = [name for name in _names(planned) if " blob" in name or name.endswith(" manifest")]
    assert sent == [f"Models: qwen2.5:7b: 1 blob ({layers[0][0][7:19]}) sent by rsync",
                    f"Models: qwen2.5:7b: 1 blob ({layers[0][0][7:19]}) checked and placed"]


def test_a_complete_host_is_sent_nothing(
    seeded: tuple[Path, PublishedModel], tmp_path: Path
) -> None:
    store, model = seeded
    held = {digest.replace(":", "-"): size for digest, size in model.blobs.items()}
    planned = _plan(_host_facts(tmp_path, model, held), store)
    assert _names(planned) == ["Models: present"]
    assert planned.text == ""


def test_an_incomplete_store_stops_before_any_change(
    seeded: tuple[Path, PublishedModel], tmp_path: Path
) -> None:
    store, model = seeded
    blob = store / "blobs" / model.model_digest.replace(":", "-")
    blob.write_bytes(b"corrupt")
    with pytest.raises(GpulabDataError, match=r"lacks or holds corrupt .*`gpulab models fetch"):
        _plan("debian12-gtx1650.json", store)
    with pytest.raises(GpulabDataError, match="not in models_store"):
        _plan("debian12-gtx1650.json", tmp_path / "empty")


def test_an_unlisted_model_is_kept_unless_told(
    seeded: tuple[Path, PublishedModel], tmp_path: Path
) -> None:
    store, model = seeded
    held = {digest.replace(":", "-"): size for digest, size in model.blobs.items()}
    facts = _host_facts(tmp_path, model, held)
    kept = _plan(facts, store, models=[])
    assert _names(kept) == ["Models: present"] and kept.text == ""
    removed = _plan(facts, store, models=[], models_remove_unlisted=True)
    assert _names(removed)[0] == "Models: qwen2.5:7b removed (models_remove_unlisted)"
    # (the @fake host's file facts see no file, so pyinfra plans no rm command to read here)


def test_direct_pulls_through_the_hosts_ollama_only_what_is_missing(
    seeded: tuple[Path, PublishedModel], tmp_path: Path
) -> None:
    _store, model = seeded
    planned = plan_deploy(course_models, "debian12-gtx1650.json",
                          {"models": ["qwen2.5:7b", "znbang/bge:large-zh-v1.5-f16"]},
                          {"uname -s": "Linux"})
    assert _names(planned)[-4:] == ["Models: the pull client", "Models: pull qwen2.5:7b",
                                    "Models: pull znbang/bge:large-zh-v1.5-f16",
                                    "Models: checked blobs recorded"]
    assert planned.op("pull qwen2.5:7b").text == (
        "python3 /usr/local/lib/gpulab/ollama-pull http://127.0.0.1:11434 "
        "registry.ollama.ai/library/qwen2.5:7b")
    mirrored = plan_deploy(course_models, "debian12-gtx1650.json",
                           {"models": ["qwen2.5:7b"], "models_registry": "http://10.0.0.5:9200"},
                           {"uname -s": "Linux"})
    assert mirrored.op("pull qwen2.5:7b").text == (
        "python3 /usr/local/lib/gpulab/ollama-pull http://127.0.0.1:11434 "
        "http://10.0.0.5:9200/library/qwen2.5:7b --insecure --copy-to qwen2.5:7b")
    held = {digest.replace(":", "-"): size for digest, size in model.blobs.items()}
    present = plan_deploy(course_models, _host_facts(tmp_path, model, held),
                          {"models": ["qwen2.5:7b"]}, {"uname -s": "Linux"})
    assert _names(present) == ["Models: present"]


def _held(model: PublishedModel) -> dict[str, int]:
    return {digest.replace(":", "-"): size for digest, size in model.blobs.items()}


def test_a_host_with_another_manifest_gets_the_stores(
    seeded: tuple[Path, PublishedModel], tmp_path: Path
) -> None:
    """Complete on the host, but not the store's qwen2.5:7b: its differing blobs and the
    store's manifest are sent (seeded mode compares digests, not just presence)."""
    store, model = seeded
    other = RegistryStandIn(tmp_path / "other").publish("qwen2.5:7b", payload_bytes=8192)
    planned = _plan(_host_facts(tmp_path, other, _held(other)), store)
    differing = [d[7:19] for d in model.blobs if other.blobs.get(d) != model.blobs[d]]
    assert differing  # the GGUF differs; template, params and license are shared
    sent = planned.op("sent by rsync").text
    assert sorted(re.findall(r"'--include=sha256-(\w{12})", sent)) == sorted(differing)
    assert _names(planned)[-2] == "Models: qwen2.5:7b manifest"


def test_a_corrupt_blob_is_sent_again_and_recorded(
    seeded: tuple[Path, PublishedModel], tmp_path: Path
) -> None:
    store, model = seeded
    blob = model.model_digest.replace(":", "-")
    planned = _plan(_host_facts(tmp_path, model, _held(model), corrupt=[blob]), store)
    sent = [name for name in _names(planned) if " blob" in name or name.endswith(" manifest")]
    assert sent == [f"Models: qwen2.5:7b: 1 blob ({blob[7:19]}) sent by rsync",
                    f"Models: qwen2.5:7b: 1 blob ({blob[7:19]}) checked and placed"]
    assert (f"find {MODELS}/blobs/{blob} -printf '%f %s %T@\\n' >> {MODELS}/.gpulab-verified"
            in planned.op("checked and placed").text)


def test_direct_deletes_a_corrupt_blob_before_the_pull(
    seeded: tuple[Path, PublishedModel], tmp_path: Path
) -> None:
    """``ollama pull`` takes a blob on disk as downloaded: gpulab removes a corrupt one first,
    then records (hashing) what the pull brought."""
    _store, model = seeded
    blob = model.model_digest.replace(":", "-")
    planned = plan_deploy(course_models,
                          _host_facts(tmp_path, model, _held(model), corrupt=[blob]),
                          {"models": ["qwen2.5:7b"]}, {"uname -s": "Linux"})
    assert _names(planned)[-4:] == ["Models: the pull client",
                                    f"Models: qwen2.5:7b corrupt blob {blob[7:19]} removed",
                                    "Models: pull qwen2.5:7b", "Models: checked blobs recorded"]
    recorded = planned.op("checked blobs recorded").text
    assert "sha256sum" in recorded and f">> {MODELS}/.gpulab-verified" in recorded


def test_blobs_the_fact_hashed_are_recorded_without_hashing_again(
    seeded: tuple[Path, PublishedModel], tmp_path: Path
) -> None:
    store, model = seeded
    line = f"sha256-{'a' * 64} 12 1733330000.1234567890"
    planned = _plan(_host_facts(tmp_path, model, _held(model), unstamped=[line]), store)
    assert _names(planned) == ["Models: present", "Models: checked blobs recorded"]
    assert planned.op("checked blobs recorded").text == (
        f"printf '%s\\n' '{line}' >> {MODELS}/.gpulab-verified")


def _swarm(facts: str, store: Path, addresses: str) -> PlannedHost:
    return plan_deploy(course_models, facts, {
        "models": ["qwen2.5:7b"], "models_distribution": "swarm", "models_store": str(store),
        "room_cache": "10.77.0.1", "room_cidrs": ["10.77.0.0/24"],
    }, {"uname -s": "Linux", "hostname -I": addresses})


def test_swarm_a_host_starts_waits_stops_then_places_the_blobs(
    seeded: tuple[Path, PublishedModel], tmp_path: Path
) -> None:
    store, model = seeded
    layers = sorted(model.blobs.items())
    held = {layers[0][0].replace(":", "-"): layers[0][1]}  # one blob is there already
    planned = _swarm(_host_facts(tmp_path, model, held), store, "10.0.2.15 10.77.0.2")
    names = _names(planned)
    order = ["Models: aria2 and nftables for the swarm", "Models: swarm started",
             "Models: swarm complete and checked", "Models: swarm stopped, port closed"]
    assert [name for name in names if name in order] == order
    stopped = names.index(order[-1])
    (placed,) = [n for n in names if n.endswith("placed from the swarm")]
    assert names.index(placed) > stopped
    assert placed.startswith(f"Models: qwen2.5:7b: {len(layers) - 1} blobs (")
    # (the host holds the manifest already: no manifest moves)
    assert names[-2:] == ["Models: Ollama lists qwen2.5:7b",
                          "Models: the swarm's staging directory removed"]
    started = planned.op("swarm started").text
    staging = f"{MODELS}/.gpulab-swarm"
    held_name = layers[0][0].replace(":", "-")
    assert f"ln {MODELS}/blobs/{held_name} {staging}/blobs/{held_name}" in started
    assert "http://10.77.0.1/swarm/" in started and "systemd-run --quiet --collect" in started
    assert "--bt-lpd-interface=10.77.0.2" in started and "--check-integrity=true" in started
    assert "ip saddr { 10.77.0.0/24 } tcp dport 6881 accept" in started
    assert "tcp dport 6881 counter drop" in started
    assert "http://10.77.0.1/models/" not in started  # peers first, the cache's HTTP later
    complete = planned.op("swarm complete").text
    for digest in model.blobs:
        assert f"{digest[7:]}  {digest.replace(':', '-')}" in complete
    # Silent for swarm_fallback_seconds (default 60): aria2 again, the cache as web seed.
    assert "[ $fell_back = no ] && [ $quiet -ge 60 ]" in complete
    assert (f"--torrent-file={staging}/room.torrent http://10.77.0.1/models/" in complete
            and "systemd-run --quiet --collect --unit=gpulab-swarm" in complete)
    assert "nft delete table inet gpulab_swarm" in planned.op("swarm stopped").text
    blob = planned.op("placed from the swarm").text
    assert f"mv -f {staging}/blobs/{layers[1][0].replace(':', '-')}" in blob
    assert "sha256sum" not in blob  # checked while the swarm still ran
    assert "rm -rf" not in blob  # the staging directory goes last, with the torrent


def test_swarm_the_room_cache_only_seeds(seeded: tuple[Path, PublishedModel]) -> None:
    store, _model = seeded
    planned = _swarm("debian12-nogpu.json", store, "10.0.2.15 10.77.0.1")
    assert _names(planned) == ["Models: aria2 and nftables for the swarm",
                               "Models: swarm started", "Models: swarm stopped, port closed"]
    started = planned.op("swarm started").text
    assert "--bt-seed-unverified=true" in started
    assert "--dir=/srv/gpulab-cache/models" in started
    assert "/srv/gpulab-cache/swarm/" in started and "curl" not in started


def test_swarm_a_complete_host_takes_no_part(
    seeded: tuple[Path, PublishedModel], tmp_path: Path
) -> None:
    store, model = seeded
    held = {digest.replace(":", "-"): size for digest, size in model.blobs.items()}
    planned = _swarm(_host_facts(tmp_path, model, held), store, "10.77.0.2")
    assert _names(planned) == ["Models: present"] and planned.text == ""


def test_swarm_a_host_off_the_room_network_is_refused(
    seeded: tuple[Path, PublishedModel]
) -> None:
    store, _model = seeded
    with pytest.raises(GpulabDataError, match=r"no address in room_cidrs \(10.77.0.0/24\)"):
        _swarm("debian12-gtx1650.json", store, "10.0.2.15")
