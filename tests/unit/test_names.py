"""Ollama model names (types/model/name.go) and where their manifests live."""

from __future__ import annotations

import json

import pytest

from gpulab.cli import main
from gpulab.models.names import (
    ModelNameError,
    name_from_manifest_path,
    parse_model_name,
    split_registry_url,
)

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
        ("http://10.0.0.5:9200/library/qwen2.5:7b", "manifests/10.0.0.5:9200/library/qwen2.5/7b",
         "10.0.0.5:9200/library/qwen2.5:7b"),
        ("_under/score", "manifests/registry.ollama.ai/_under/score/latest", "_under/score:latest"),
        ("Registry.Ollama.AI/Library/Qwen2.5:7B",
         "manifests/Registry.Ollama.AI/Library/Qwen2.5/7B", "Qwen2.5:7B"),
    ],
)
def test_names(text: str, manifest: str, short: str) -> None:
    name = parse_model_name(text)
    assert name.manifest_path == manifest
    assert name.short == short


def test_host_port_and_scheme() -> None:
    name = parse_model_name("http://10.0.0.5:9200/library/qwen2.5:7b")
    assert (name.scheme, name.host, name.base_url) == ("http", "10.0.0.5:9200",
                                                        "http://10.0.0.5:9200")
    assert name.insecure
    assert name.pull_name() == "http://10.0.0.5:9200/library/qwen2.5:7b"
    plain = parse_model_name("qwen2.5:7b")
    assert (plain.scheme, plain.insecure) == ("https", False)
    assert plain.pull_name() == "registry.ollama.ai/library/qwen2.5:7b"


def test_compare_ignores_case_like_ollama() -> None:
    canonical = parse_model_name("registry.ollama.ai/library/qwen2.5:7b")
    assert parse_model_name("Qwen2.5:7B") == canonical
    assert hash(parse_model_name("QWEN2.5:7b")) == hash(parse_model_name("qwen2.5:7b"))
    assert parse_model_name("qwen2.5:7b") != parse_model_name("qwen2.5:14b")


def test_through_a_mirror_keeps_the_rest_of_the_name() -> None:
    mirrored = parse_model_name("znbang/bge:large-zh-v1.5-f16").through("http://10.0.0.5:9200/")
    assert mirrored.pull_name() == "http://10.0.0.5:9200/znbang/bge:large-zh-v1.5-f16"
    assert split_registry_url("registry.ollama.ai") == ("https", "registry.ollama.ai")
    with pytest.raises(ModelNameError, match="scheme 'ftp'"):
        split_registry_url("ftp://mirror")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "model is empty"),
        ("qwen 7b", "may not contain ' '"),
        ("a/b/c/d", "too many '/'"),
        ("ns.x/model:tag", "namespace 'ns.x' may not contain '.'"),
        ("-bad:tag", "must start with"),
        ("model:", "tag is empty"),
        ("model:-x", "must start with"),
        ("../../etc/passwd", "must start with"),
        ("library/..:x", "must start with"),
        ("a//b", "namespace is empty"),
        ("/b", "namespace is empty"),
        ("host/ns/", "model is empty"),
        ("ftp://h/ns/m", "scheme 'ftp'"),
        ("m:" + "t" * 81, "tag is longer than 80"),
        ("ns/m:t:u", "may not contain ':'"),
    ],
)
def test_bad_names(text: str, reason: str) -> None:
    with pytest.raises(ModelNameError, match=reason.replace(".", r"\.").replace("(", r"\(")):
        parse_model_name(text)


def test_names_from_manifest_files() -> None:
    name = name_from_manifest_path("registry.ollama.ai/znbang/bge/large-zh-v1.5-f16")
    assert name == parse_model_name("znbang/bge:large-zh-v1.5-f16")
    assert name_from_manifest_path("registry.ollama.ai/library/.DS_Store") is None
    assert name_from_manifest_path("registry.ollama.ai/library/x/.hidden") is None


def test_resolve_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "resolve", "qwen2.5:7b", "--json"]) == 0
    parts = json.loads(capsys.readouterr().out)
    assert {key: parts[key] for key in ("host", "namespace", "model", "tag", "manifest")} == {
        "host": "registry.ollama.ai", "namespace": "library", "model": "qwen2.5", "tag": "7b",
        "manifest": "manifests/registry.ollama.ai/library/qwen2.5/7b",
    }


def test_resolve_command_refuses_a_bad_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "resolve", "../x:y"]) == 1
    assert "must start with" in capsys.readouterr().err
