"""The image cache key: stable for the same recipe, different when any input changes."""

from __future__ import annotations

import copy

import pytest

from gpulab.lab import image

pytestmark = pytest.mark.unit


def test_recipe_hash_is_stable() -> None:
    a = image.recipe(ca_certs={})
    assert image.recipe_hash(a) == image.recipe_hash(copy.deepcopy(a))
    assert len(image.recipe_hash(a)) == 16
    assert image.recipe_hash(a) == image.recipe_hash(image.recipe(ca_certs={}))


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r["packages"].append("vim"),
        lambda r: r["files"].__setitem__("etc/resolv.conf", "nameserver 1.1.1.1\n"),
        lambda r: r["masked"].remove("apt-daily.timer"),
        lambda r: r.__setitem__("builder", "0" * 64),
    ],
)
def test_recipe_hash_changes_with_inputs(change: object) -> None:
    base = image.recipe(ca_certs={})
    changed = copy.deepcopy(base)
    change(changed)  # type: ignore[operator]
    assert image.recipe_hash(changed) != image.recipe_hash(base)


def test_extra_ca_certificates_are_part_of_the_recipe() -> None:
    without = image.recipe_hash(image.recipe(ca_certs={}))
    with_ca = image.recipe_hash(image.recipe(ca_certs={"proxy.crt": b"-----BEGIN..."}))
    assert without != with_ca


def test_recipe_pins_what_dkms_and_ssh_need() -> None:
    r = image.recipe(ca_certs={})
    pkgs = r["packages"]
    assert isinstance(pkgs, list)
    for p in ("linux-image-amd64", "linux-headers-amd64", "openssh-server", "python3"):
        assert p in pkgs
    files = r["files"]
    assert isinstance(files, dict)
    assert files["etc/resolv.conf"] == "nameserver 10.0.2.3\n"


def test_cache_root_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("GPULAB_CACHE", str(tmp_path))
    assert str(image.cache_root()) == str(tmp_path)
    monkeypatch.delenv("GPULAB_CACHE")
    assert image.cache_root().parts[-2:] == (".cache", "gpulab")
