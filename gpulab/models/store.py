"""An Ollama-layout model store: ``manifests/<host>/<namespace>/<model>/<tag>`` and
``blobs/sha256-<hex>``, as ``manifest/paths.go`` and ``manifest/manifest.go`` lay it out.

The instructor's store (filled by ``gpulab models fetch`` or ``import``) is the room's one copy
of each model; a host's ``OLLAMA_MODELS`` has the same layout. Every write is atomic (a
temporary name in the same directory, then a rename) and every blob is checked against its
sha256 before it takes its final name, so a store never holds a half-written file under a
real name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gpulab.models.names import ModelName, name_from_manifest_path, parse_model_name
from gpulab.settings import Settings

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20
# Ollama creates directories 0755 and files 0644 (manifest/*.go, server/images.go).
FILE_MODE = 0o644


class StoreError(Exception):
    """A store, manifest or blob that cannot be used, with what to do about it."""


class Layer(BaseModel):
    """One blob a manifest refers to (``manifest/layer.go``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    media_type: str = Field(alias="mediaType")
    digest: str
    size: int = Field(ge=0)

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not _DIGEST.match(value):
            raise ValueError(f"{value!r} is not a sha256:<64 hex> digest")
        return value

    @property
    def file_name(self) -> str:
        """The blob's name on disk: ``sha256-<hex>``."""
        return self.digest.replace(":", "-", 1)

    @property
    def hex(self) -> str:
        return self.digest.partition(":")[2]


class Manifest(BaseModel):
    """A model manifest (``manifest/manifest.go``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_version: int = Field(alias="schemaVersion")
    media_type: str = Field(default=MANIFEST_MEDIA_TYPE, alias="mediaType")
    config: Layer
    layers: list[Layer]

    @property
    def blobs(self) -> list[Layer]:
        """Config and layers, each digest once, in manifest order."""
        seen: dict[str, Layer] = {}
        for layer in (self.config, *self.layers):
            seen.setdefault(layer.digest, layer)
        return list(seen.values())

    @property
    def total_size(self) -> int:
        """What ``/api/tags`` reports as ``size``: the layers plus the config."""
        return sum(layer.size for layer in self.layers) + self.config.size


def parse_manifest(data: bytes, where: str) -> Manifest:
    """A manifest from its bytes; ``StoreError`` naming ``where`` when it is not one."""
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise StoreError(f"{where}: not an Ollama manifest ({location}: {first['msg']})") from None


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_digest(data: bytes) -> str:
    """The model's ID as ``/api/tags`` reports it: the sha256 of the manifest file's bytes."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StoredModel:
    """A manifest found in a store: its name, raw bytes and parsed form."""

    name: ModelName
    data: bytes
    manifest: Manifest

    @property
    def digest(self) -> str:
        return manifest_digest(self.data)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` under a temporary name in its directory, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class Store:
    """An Ollama-layout store rooted at ``root`` (what ``OLLAMA_MODELS`` points at).

    Example::

        store = Store(Path("~/gpulab-models").expanduser())
        stored = store.read(parse_model_name("qwen2.5:7b"))
        missing = store.missing_blobs(stored.manifest) if stored else []
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def manifest_file(self, name: ModelName) -> Path:
        return self.root / name.manifest_path

    def blob_file(self, layer: Layer) -> Path:
        return self.root / "blobs" / layer.file_name

    def partial_file(self, layer: Layer) -> Path:
        """Where a download in progress lives; Ollama's startup prune ignores it for an hour."""
        return self.root / "blobs" / f"{layer.file_name}-gpulab-partial"

    def read(self, name: ModelName) -> StoredModel | None:
        """The model's manifest, or None when the store has none for this name."""
        path = self.manifest_file(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return StoredModel(name, data, parse_manifest(data, str(path)))

    def models(self) -> Iterator[StoredModel]:
        """Every manifest four levels below ``manifests/`` (``manifest.Manifests``)."""
        base = self.root / "manifests"
        for path in sorted(base.glob("*/*/*/*")):
            name = name_from_manifest_path(path.relative_to(base).as_posix())
            if name is not None and path.is_file():
                data = path.read_bytes()
                yield StoredModel(name, data, parse_manifest(data, str(path)))

    def blob_problem(self, layer: Layer) -> str | None:
        """Why the store's copy of a blob is unusable (missing, short, corrupt), or None."""
        path = self.blob_file(layer)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return "missing"
        if size != layer.size:
            return f"{size} bytes, the manifest says {layer.size}"
        if sha256_file(path) != layer.hex:
            return "its sha256 does not match its name (corrupt)"
        return None

    def missing_blobs(self, manifest: Manifest) -> list[Layer]:
        """The blobs of ``manifest`` this store lacks or holds corrupt."""
        return [layer for layer in manifest.blobs if self.blob_problem(layer) is not None]

    def commit_blob(self, source: Path, layer: Layer) -> None:
        """Check ``source`` against the layer's size and sha256, then rename it into place.

        A mismatch deletes ``source`` (it can only be fetched again) and raises ``StoreError``.
        """
        size = source.stat().st_size
        actual = sha256_file(source) if size == layer.size else None
        if actual != layer.hex:
            source.unlink(missing_ok=True)
            found = f"sha256 {actual}" if actual else f"{size} bytes, expected {layer.size}"
            raise StoreError(f"blob {layer.digest}: {found}; deleted, fetch it again")
        os.chmod(source, FILE_MODE)
        self.blob_file(layer).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, self.blob_file(layer))

    def write_manifest(self, name: ModelName, data: bytes) -> bool:
        """Write a manifest (last, after its blobs); False when the same bytes were there."""
        path = self.manifest_file(name)
        if path.is_file() and path.read_bytes() == data:
            return False
        atomic_write(path, data)
        return True

    def import_model(self, source: Store, stored: StoredModel) -> int:
        """Copy one model from another store, every blob checked; the bytes copied."""
        copied = 0
        for layer in self.missing_blobs(stored.manifest):
            if not source.blob_file(layer).is_file():
                raise StoreError(f"{stored.name.short}: blob {layer.digest} is missing from "
                                 f"{source.root}; pull the model there again")
            self.blob_file(layer).parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.blob_file(layer).parent,
                                                 prefix=f".{layer.file_name}.")
            with os.fdopen(handle, "wb") as out, source.blob_file(layer).open("rb") as src:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
            try:
                self.commit_blob(Path(temporary), layer)
            except StoreError as error:
                raise StoreError(f"{stored.name.short}: in {source.root}, {error}; "
                                 "pull the model there again") from None
            copied += layer.size
        self.write_manifest(stored.name, stored.data)
        return copied


def seeded_source(settings: Settings) -> dict[ModelName, StoredModel]:
    """The instructor's manifests of the course models, in seeded mode: what the plan
    compares each host with. A model the store lacks or cannot read is left out; the deploy
    stops on it with what to do."""
    if not settings.from_store or settings.models_store is None:
        return {}
    store = Store(Path(settings.models_store).expanduser())
    found: dict[ModelName, StoredModel] = {}
    for text in settings.models:
        try:
            stored = store.read(parse_model_name(text))
        except StoreError:
            continue
        if stored is not None:
            found[stored.name] = stored
    return found
