"""Ollama model names and where their manifests live."""

from __future__ import annotations

import pytest

from gpulab.models.names import ModelNameError, parse_model_name

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "manifest", "short"),
    [
        ("qwen2.5:7b", "manifests/registry.ollama.ai/library/qwen2.5/7b", "qwen2.5:7b"),
        ("znbang/bge:large-zh-v1.5-f16",
         "manifests/registry.ollama.ai/znbang/bge/large-zh-v1.5-f16",
         "znbang/bge:large-zh-v1.5-f16"),
        ("llama3.2", "manifests/registry.ollama.ai/library/llama3.2/latest", "llama3.2:latest"),
        ("10.0.0.5:9200/library/qwen2.5:7b", "manifests/10.0.0.5:9200/library/qwen2.5/7b",
         "10.0.0.5:9200/library/qwen2.5:7b"),
    ],
)
def test_names(text: str, manifest: str, short: str) -> None:
    name = parse_model_name(text)
    assert name.manifest_path == manifest
    assert name.short == short


@pytest.mark.parametrize(
    "text", ["", "qwen 7b", "a/b/c/d", "ns.x/model:tag", "-bad:tag", "model:", "model:-x"]
)
def test_bad_names(text: str) -> None:
    with pytest.raises(ModelNameError):
        parse_model_name(text)
