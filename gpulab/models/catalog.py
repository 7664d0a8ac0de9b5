"""What is known of the course models before they are pulled: their size on disk.

Sizes are the registry's totals (``/api/tags`` ``size``: the sum of the layers of the published
manifest; qwen2.5:7b, manifest ``845dbda0ea48``, is 4,683,087,332 bytes); ``approximate`` marks
sizes not confirmed from the registry.
"""

from __future__ import annotations

from typing import NamedTuple


class KnownModel(NamedTuple):
    """A model and its size in bytes."""

    name: str
    size_bytes: int
    approximate: bool


KNOWN_MODELS: dict[str, KnownModel] = {
    model.name: model
    for model in (
        KnownModel("qwen2.5:7b", 4_683_087_332, approximate=False),
        # ~326M parameters in f16; a third-party listing of the same weights shows 651 MB.
        KnownModel("znbang/bge:large-zh-v1.5-f16", 651_000_000, approximate=True),
    )
}

# Weights plus KV cache and compute buffers at the default context; a planning margin,
# not a measurement.
RUNTIME_OVERHEAD = 1.2

# Vector length of each course embedding model (the model card's hidden_size):
# BAAI/bge-large-zh-v1.5 config.json "hidden_size": 1024.
EMBEDDING_DIMENSIONS: dict[str, int] = {
    "znbang/bge:large-zh-v1.5-f16": 1024,
}
