"""Per host and course model: present, to pull or to copy, the bytes that move, and the fit.

Pure: from the host's store facts (its manifests and blob files), its settings and, in seeded
mode, the instructor's manifests (``source``, read by the caller). A model is sized from the
instructor's manifest, else from the host's, else from the catalogue's estimate
(``gpulab.models.catalog``, marked ``~``). A blob counts as held only when its size matches
and gpulab's sha256 check did not find it corrupt.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from gpulab.facts.model import HostFacts
from gpulab.models.catalog import KNOWN_MODELS, RUNTIME_OVERHEAD
from gpulab.models.names import ModelName, name_from_manifest_path, parse_model_name
from gpulab.models.store import (
    Manifest,
    StoredModel,
    StoreError,
    manifest_digest,
    parse_manifest,
)
from gpulab.settings import Settings

ModelAction = Literal["present", "pull", "copy", "keep", "remove"]


class ModelFit(BaseModel):
    """One model on one host: what happens to it, what moves, whether it fits the GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    action: ModelAction
    size_bytes: int | None
    size_exact: bool  # from a manifest (True) or the catalogue's estimate (False)
    bytes_to_move: int | None
    manifest_digest: str | None  # the host's manifest, when it has one
    corrupt_blobs: tuple[str, ...] = ()  # held under the model's names, content wrong
    fits_gpu: bool | None
    reason: str


def _host_manifests(facts: HostFacts) -> dict[ModelName, tuple[str, Manifest]]:
    found: dict[ModelName, tuple[str, Manifest]] = {}
    for entry in facts.model_store.manifests:
        name = name_from_manifest_path(entry.path)
        if name is None:
            continue
        data = base64.b64decode(entry.data_base64)
        try:
            found[name] = (manifest_digest(data), parse_manifest(data, entry.path))
        except StoreError:
            continue  # unreadable: treated as absent, so the model is brought again
    return found


def _fit(size: int | None, exact: bool, facts: HostFacts) -> tuple[bool | None, str]:
    if size is None:
        return None, "size unknown until fetched"
    size_text = f"{'' if exact else '~'}{size / 1e9:.1f} GB"
    if not facts.smi.gpus:
        return None, f"{size_text}; GPU memory unknown until the driver runs"
    vram_mib = max(gpu.memory_total_mib or 0 for gpu in facts.smi.gpus)
    need_mib = int(size * RUNTIME_OVERHEAD / 2**20)
    if vram_mib >= need_mib:
        return True, f"{size_text} fits {vram_mib} MiB"
    return False, (f"{size_text} needs ~{need_mib} MiB, GPU has {vram_mib}: installed, but runs"
                   " partly on the CPU (slowly)")


def plan_models(facts: HostFacts, settings: Settings,
                source: Mapping[ModelName, StoredModel] | None = None) -> tuple[ModelFit, ...]:
    """Each listed model's action, then the host's other models (kept unless told).

    ``source``: the instructor's store's manifests (seeded mode); a host whose manifest
    differs from the store's gets the store's copy.
    """
    on_host = _host_manifests(facts)
    store = facts.model_store
    verb: ModelAction = "copy" if settings.from_store else "pull"
    plans: list[ModelFit] = []
    wanted = [parse_model_name(text) for text in settings.models]
    for name in wanted:
        held = on_host.get(name)
        digest = held[0] if held else None
        stored = (source or {}).get(name)
        target = stored.manifest if stored else held[1] if held else None
        # A host manifest the store does not match is replaced: its bytes move too.
        stale = stored is not None and digest != stored.digest
        manifest_bytes = len(stored.data) if stored is not None and stale else 0
        if target is not None:
            lacking = [layer for layer in target.blobs if not store.sound(layer.file_name,
                                                                          layer.size)]
            missing = sum(layer.size for layer in lacking)
            corrupt = tuple(layer.file_name for layer in lacking
                            if layer.file_name in store.corrupt)
            size: int | None = target.total_size
            exact = True
        else:
            lacking, missing, corrupt = [], 0, ()
            known = KNOWN_MODELS.get(name.short)
            size, exact = (known.size_bytes, not known.approximate) if known else (None, False)
        fits, fit_reason = _fit(size, exact, facts)
        if held is not None and not lacking and not stale:
            action: ModelAction = "present"
            to_move: int | None = 0
            reason = f"present ({digest and digest[:12]}); {fit_reason}"
        else:
            action = verb
            to_move = size if target is None else missing + manifest_bytes
            moved = "?" if to_move is None else f"{to_move / 1e9:.2f} GB"
            source_text = ("from the instructor's store" if verb == "copy"
                           else f"from {settings.models_registry}")
            why = "".join((
                f" (the host's manifest {digest[:12]} is not the store's {stored.digest[:12]})"
                if stored is not None and stale and digest else "",
                f" ({len(corrupt)} corrupt blob(s) replaced)" if corrupt else "",
            ))
            reason = f"{verb} {moved} {source_text}{why}; {fit_reason}"
        plans.append(ModelFit(name=name.short, action=action, size_bytes=size, size_exact=exact,
                              bytes_to_move=to_move, manifest_digest=digest,
                              corrupt_blobs=corrupt, fits_gpu=fits, reason=reason))
    for name, (digest, manifest) in sorted(on_host.items(), key=lambda item: item[0].short):
        if name in wanted:
            continue
        remove = settings.models_remove_unlisted
        plans.append(ModelFit(
            name=name.short, action="remove" if remove else "keep",
            size_bytes=manifest.total_size, size_exact=True, bytes_to_move=0,
            manifest_digest=digest, fits_gpu=None,
            reason=("not in models: removed (models_remove_unlisted)" if remove else
                    "not in models: kept (set models_remove_unlisted: true to remove it)"),
        ))
    return tuple(plans)
