"""Ollama model names: ``[scheme://][host/][namespace/]model[:tag]``, read as Ollama reads them.

A port of ``types/model/name.go`` (github.com/ollama/ollama): ``ParseNameBare`` cuts the tag
after the last ``:`` (only when it follows the last ``/``), then the model, the namespace and
what is left is the host, which may carry a port and a ``scheme://`` prefix
(``http://10.0.0.5:9200/library/qwen2.5:7b`` is how Ollama pulls from an insecure mirror).
Missing parts take Ollama's defaults; every part must then be valid (``IsFullyQualified``), so
no name can point outside the store (no ``..``, no empty part, no ``/`` inside a part).
Names compare case-insensitively (``Name.EqualFold``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"
# Ollama keeps any scheme in the name; gpulab fetches only over these.
SCHEMES = ("https", "http")

# name.go isValidLen: host up to 350 characters, every other part up to 80.
_MAX_LENGTH = {"host": 350, "namespace": 80, "model": 80, "tag": 80}
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class ModelNameError(ValueError):
    """A model name Ollama would not accept."""


def _part_problem(kind: str, value: str) -> str | None:
    """Why ``value`` is not a valid ``kind`` part (name.go ``isValidPart``), or None."""
    if not value:
        return f"the {kind} is empty"
    if len(value) > _MAX_LENGTH[kind]:
        return f"the {kind} is longer than {_MAX_LENGTH[kind]} characters"
    if value[0] not in _WORD:
        return f"the {kind} {value!r} must start with a letter, a digit or '_'"
    for char in value[1:]:
        if char in _WORD or char in "-_":
            continue
        if char == "." and kind != "namespace":
            continue
        if char == ":" and kind == "host":
            continue
        if char == "/":
            return "too many '/' (at most [host/][namespace/]model[:tag])"
        return f"the {kind} {value!r} may not contain {char!r}"
    return None


@dataclass(frozen=True, eq=False)
class ModelName:
    """A fully qualified model name; equal to another when all parts match ignoring case."""

    host: str
    namespace: str
    model: str
    tag: str
    scheme: str = field(default=DEFAULT_SCHEME)

    def _folded(self) -> tuple[str, str, str, str]:
        return (self.host.casefold(), self.namespace.casefold(), self.model.casefold(),
                self.tag.casefold())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelName):
            return NotImplemented
        return self._folded() == other._folded()

    def __hash__(self) -> int:
        return hash(self._folded())

    @property
    def manifest_path(self) -> str:
        """Where Ollama stores its manifest, relative to ``OLLAMA_MODELS`` (``Name.Filepath``)."""
        return f"manifests/{self.host}/{self.namespace}/{self.model}/{self.tag}"

    @property
    def short(self) -> str:
        """The name as ``ollama list`` shows it (``DisplayShortest``)."""
        prefix = ""
        if self.host.casefold() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.casefold() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"

    @property
    def base_url(self) -> str:
        """The registry this name is pulled from (``Name.BaseURL``)."""
        return f"{self.scheme}://{self.host}"

    @property
    def manifest_url(self) -> str:
        """Where the registry serves this name's manifest (``/v2/<ns>/<model>/manifests/<tag>``)."""
        return f"{self.base_url}/v2/{self.namespace}/{self.model}/manifests/{self.tag}"

    def blob_url(self, digest: str) -> str:
        """Where the registry serves one of this name's blobs (``sha256:<hex>``)."""
        return f"{self.base_url}/v2/{self.namespace}/{self.model}/blobs/{digest}"

    @property
    def insecure(self) -> bool:
        """Plain http: Ollama pulls it only with ``--insecure`` / ``"insecure": true``."""
        return self.scheme == "http"

    def pull_name(self) -> str:
        """The name as given to ``ollama pull``, scheme included when it is not https."""
        prefix = "" if self.scheme == DEFAULT_SCHEME else f"{self.scheme}://"
        return f"{prefix}{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def through(self, registry_url: str) -> ModelName:
        """The same model served by another registry (a mirror): its scheme and host."""
        scheme, host = split_registry_url(registry_url)
        return replace(self, scheme=scheme, host=host)


def split_registry_url(url: str) -> tuple[str, str]:
    """``http://10.0.0.5:9200`` -> ``("http", "10.0.0.5:9200")``; a bare host means https."""
    scheme, sep, host = url.rstrip("/").partition("://")
    if not sep:
        scheme, host = DEFAULT_SCHEME, url.rstrip("/")
    if scheme not in SCHEMES:
        raise ModelNameError(f"registry {url!r}: scheme {scheme!r} is not one of "
                             f"{', '.join(SCHEMES)}")
    problem = _part_problem("host", host)
    if problem:
        raise ModelNameError(f"registry {url!r}: {problem}")
    return scheme, host


_UNCUT = "\0uncut"
_MISSING = "\0missing"


def _cut_promised(text: str, separator: str) -> tuple[str, str]:
    """name.go ``cutPromised``: cut at the last separator; an empty side is missing, not default."""
    before, found, after = text.rpartition(separator)
    if not found:
        return text, _UNCUT
    return before or _MISSING, after or _MISSING


def parse_model_name(text: str) -> ModelName:
    """Split a model name into its parts, filling Ollama's defaults.

    >>> parse_model_name("znbang/bge:large-zh-v1.5-f16").manifest_path
    'manifests/registry.ollama.ai/znbang/bge/large-zh-v1.5-f16'
    >>> parse_model_name("http://10.0.0.5:9200/library/qwen2.5:7b").base_url
    'http://10.0.0.5:9200'
    """
    rest, tag, host, namespace, scheme = text, "", "", "", ""
    if rest.rfind(":") > rest.rfind("/"):
        rest, tag = _cut_promised(rest, ":")
    rest, model = _cut_promised(rest, "/")
    if model == _UNCUT:
        model, rest = rest, ""
    if rest:
        rest, namespace = _cut_promised(rest, "/")
        if namespace == _UNCUT:
            namespace, rest = rest, ""
    if rest:
        scheme, sep, host = rest.partition("://")
        if not sep:
            scheme, host = "", rest
    scheme = scheme or DEFAULT_SCHEME
    if scheme not in SCHEMES:
        raise ModelNameError(f"{text!r} is not a model name: scheme {scheme!r} is not one of "
                             f"{', '.join(SCHEMES)}")
    name = ModelName(host or DEFAULT_HOST, namespace or DEFAULT_NAMESPACE, model,
                     tag or DEFAULT_TAG, scheme)
    for kind in ("host", "namespace", "model", "tag"):
        value = getattr(name, kind)
        problem = f"the {kind} is empty" if value == _MISSING else _part_problem(kind, value)
        if problem:
            raise ModelNameError(f"{text!r} is not a model name: {problem}")
    return name


def name_from_manifest_path(relative: str) -> ModelName | None:
    """The name a manifest file stands for (``ParseNameFromFilepath``), or None if none.

    ``relative`` is below ``manifests/``: ``registry.ollama.ai/library/qwen2.5/7b``.
    """
    parts = relative.split("/")
    if len(parts) != 4:
        return None
    name = ModelName(*parts)
    if any(_part_problem(kind, getattr(name, kind))
           for kind in ("host", "namespace", "model", "tag")):
        return None
    return name
