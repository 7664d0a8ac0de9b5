"""Fetch models from an Ollama registry into a store, the way ``server/images.go`` and
``server/download.go`` (github.com/ollama/ollama) pull them.

* The manifest: ``GET <base>/v2/<namespace>/<model>/manifests/<tag>`` with
  ``Accept: application/vnd.docker.distribution.manifest.v2+json`` (without it the registry
  answers ``MANIFEST_INVALID``, ollama issue #769).
* Each blob: ``GET <base>/v2/<namespace>/<model>/blobs/<digest>``; registry.ollama.ai answers
  with a redirect to its CDN host, which serves ``Range`` requests. Redirects are followed by
  hand so the ``Range`` header reaches the CDN on resume.
* A blob is downloaded to ``sha256-<hex>-gpulab-partial``; after a dropped connection or a
  stall (no byte for ``stall_timeout`` seconds) it is resumed with ``Range: bytes=<have>-``,
  with backoff between tries. Only a complete file whose sha256 matches takes its real name.
* The manifest is written last, under the model's canonical name, so a store filled through a
  mirror lists ``qwen2.5:7b`` and not the mirror's host.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from gpulab import __version__
from gpulab.models.names import ModelName
from gpulab.models.store import (
    MANIFEST_MEDIA_TYPE,
    Layer,
    Store,
    StoreError,
    parse_manifest,
)

USER_AGENT = f"gpulab/{__version__}"
_CHUNK = 1 << 20
_MAX_REDIRECTS = 10
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError)


class RegistryError(Exception):
    """A registry that refused or kept failing, with what to do about it."""


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    """Hand every redirect back to the caller, which follows it with its own headers."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@dataclass
class FetchResult:
    """What fetching one model did."""

    name: ModelName
    downloaded_bytes: int = 0
    fetched_blobs: list[str] = field(default_factory=list)
    manifest_written: bool = False


class RegistryClient:
    """A resumable, verifying client for Ollama's registry protocol.

    Example::

        client = RegistryClient(on_bytes=progress_callback)
        result = client.fetch(Store(path), parse_model_name("qwen2.5:7b"))
    """

    def __init__(
        self,
        *,
        stall_timeout: float = 30.0,
        retries: int = 6,
        backoff_s: float = 1.0,
        on_bytes: Callable[[str, int, int], None] | None = None,
    ) -> None:
        """``on_bytes(digest, done, total)`` is called as a blob arrives (progress bars)."""
        self.stall_timeout = stall_timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.on_bytes = on_bytes
        self._opener = urllib.request.build_opener(_KeepRedirects())

    def _open(self, url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        """GET ``url``, following redirects (to any host) with the same headers."""
        for _ in range(_MAX_REDIRECTS):
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
            try:
                response: http.client.HTTPResponse = self._opener.open(
                    request, timeout=self.stall_timeout)
                return response
            except urllib.error.HTTPError as error:
                location = error.headers.get("Location")
                if error.code in (301, 302, 303, 307, 308) and location:
                    error.close()
                    url = urllib.parse.urljoin(url, location)
                    continue
                raise
        raise RegistryError(f"{url}: more than {_MAX_REDIRECTS} redirects")

    def _retrying(self, what: str, attempt: Callable[[], bool]) -> None:
        """Run ``attempt`` until it returns True; network errors back off and retry.

        ``attempt`` returns False when it made progress before failing, which resets the count:
        a slow link that keeps delivering is never given up on, a dead one is.
        """
        failures = 0
        while True:
            try:
                if attempt():
                    return
                failures = 0
            except urllib.error.HTTPError:
                raise
            except _NETWORK_ERRORS as error:
                failures += 1
                if failures > self.retries:
                    raise RegistryError(f"{what}: {error} ({self.retries} retries); check the "
                                        "link or models_registry, then run again: it resumes"
                                        ) from None
                time.sleep(self.backoff_s * 2 ** (failures - 1))

    def manifest(self, source: ModelName) -> bytes:
        """The manifest's bytes, exactly as the registry sent them."""
        url = source.manifest_url
        body: list[bytes] = []

        def attempt() -> bool:
            with self._open(url, {"Accept": MANIFEST_MEDIA_TYPE}) as response:
                body.append(response.read())
            return True

        try:
            self._retrying(url, attempt)
        except urllib.error.HTTPError as error:
            hint = ("no such model or tag: check the name (gpulab models resolve NAME)"
                    if error.code == 404 else f"HTTP {error.code} {error.reason}")
            raise RegistryError(f"{url}: {hint}") from None
        return body[0]

    def fetch_blob(self, store: Store, source: ModelName, layer: Layer) -> int:
        """Download one blob into ``store``, resuming a partial file; the bytes transferred."""
        url = source.blob_url(layer.digest)
        partial = store.partial_file(layer)
        partial.parent.mkdir(parents=True, exist_ok=True)
        transferred = 0

        def attempt() -> bool:
            nonlocal transferred
            have = partial.stat().st_size if partial.exists() else 0
            if have > layer.size:
                partial.unlink()
                have = 0
            if have == layer.size:
                return True
            headers = {"Range": f"bytes={have}-"} if have else {}
            with self._open(url, headers) as response:
                mode = "ab" if response.status == 206 else "wb"
                done = have if mode == "ab" else 0
                progressed = False
                with partial.open(mode) as out:
                    try:
                        while chunk := response.read(_CHUNK):
                            out.write(chunk)
                            done += len(chunk)
                            transferred += len(chunk)
                            progressed = True
                            if self.on_bytes:
                                self.on_bytes(layer.digest, done, layer.size)
                    except _NETWORK_ERRORS:
                        if not progressed:
                            raise
            if done < layer.size:
                # The server closed early without an error: resume from what arrived.
                if progressed:
                    return False
                raise ConnectionError(f"{url}: the transfer ended at {done} of {layer.size}")
            return True

        try:
            self._retrying(url, attempt)
        except urllib.error.HTTPError as error:
            raise RegistryError(f"{url}: HTTP {error.code} {error.reason}") from None
        store.commit_blob(partial, layer)
        return transferred

    def fetch(self, store: Store, name: ModelName, registry: str | None = None) -> FetchResult:
        """Make ``store`` hold ``name`` complete, from ``registry`` (a mirror) or its own host.

        Blobs already in the store with the right sha256 are not downloaded; a corrupt one is
        fetched again (once: a second mismatch is the registry's fault and is reported).
        """
        source = name.through(registry) if registry else name
        data = self.manifest(source)
        manifest = parse_manifest(data, f"{source.pull_name()} (from the registry)")
        result = FetchResult(name)
        for layer in store.missing_blobs(manifest):
            try:
                result.downloaded_bytes += self.fetch_blob(store, source, layer)
            except StoreError:
                result.downloaded_bytes += self.fetch_blob(store, source, layer)
            result.fetched_blobs.append(layer.digest)
        result.manifest_written = store.write_manifest(name, data)
        return result
