"""Ollama model names: ``[host/][namespace/]model[:tag]`` as ``types/model/name.go`` reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

# name.go: host up to 350 chars (may hold a port), namespace up to 80 without dots,
# model and tag up to 80 and may hold dots. Parts start with a letter or digit.
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,349}(:\d{1,5})?$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")
_MODEL_OR_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class ModelNameError(ValueError):
    """A model name Ollama would not accept."""


@dataclass(frozen=True)
class ModelName:
    """A fully qualified model name."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def manifest_path(self) -> str:
        """Where Ollama stores its manifest, relative to ``OLLAMA_MODELS``."""
        return f"manifests/{self.host}/{self.namespace}/{self.model}/{self.tag}"

    @property
    def short(self) -> str:
        """The name as ``ollama list`` shows it."""
        prefix = ""
        if self.host != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"


def parse_model_name(text: str) -> ModelName:
    """Split a model name into its parts, filling Ollama's defaults.

    >>> parse_model_name("znbang/bge:large-zh-v1.5-f16").manifest_path
    'manifests/registry.ollama.ai/znbang/bge/large-zh-v1.5-f16'
    """
    rest = text.strip()
    if not rest or any(ch.isspace() for ch in rest):
        raise ModelNameError(f"{text!r} is not a model name such as qwen2.5:7b")
    parts = rest.split("/")
    if len(parts) > 3:
        raise ModelNameError(f"{text!r} has too many '/' (host/namespace/model:tag at most)")
    last = parts[-1]
    model, colon, tag = last.partition(":")
    if colon and not tag:
        raise ModelNameError(f"{text!r} ends in ':' without a tag")
    tag = tag or DEFAULT_TAG
    host = parts[0] if len(parts) == 3 else DEFAULT_HOST
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    for value, pattern, what in (
        (host, _HOST, "host"),
        (namespace, _NAMESPACE, "namespace"),
        (model, _MODEL_OR_TAG, "model"),
        (tag, _MODEL_OR_TAG, "tag"),
    ):
        if not pattern.match(value):
            raise ModelNameError(f"{text!r}: {what} {value!r} is not allowed in a model name")
    return ModelName(host, namespace, model, tag)
