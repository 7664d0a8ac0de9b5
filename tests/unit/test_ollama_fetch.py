"""The download/verify/unpack script and the link switch, run for real with sh, curl and tar.

The stand-in release (``tests/fixtures/ollama_release.py``) is served on loopback; paths are
a temporary tree instead of /opt and /usr/local, nothing else differs from a host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpulab.plan.ollama import Layout, fetch_script, mirror_script, switch_link_script
from tests.fixtures.http_server import StaticServer
from tests.fixtures.ollama_release import build_release, corrupt_release
from tests.needs import skip_or_fail

pytestmark = pytest.mark.unit
FETCH_TOOLS = ("curl", "zstd", "tar", "sha256sum")


@pytest.fixture(autouse=True)
def _fetch_tools() -> None:
    missing = [tool for tool in FETCH_TOOLS if shutil.which(tool) is None]
    if missing:
        skip_or_fail(f"the fetch script needs {', '.join(missing)}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[StaticServer]:
    with StaticServer(tmp_path / "www") as server:
        yield server


def _layout(tmp_path: Path) -> Layout:
    return Layout(opt_dir=str(tmp_path / "opt"), cache_dir=str(tmp_path / "cache"),
                  bin_link=str(tmp_path / "bin/ollama"), lib_link=str(tmp_path / "lib/ollama"))


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120,
                          check=False)


def test_fresh_download_is_verified_and_unpacked(tmp_path: Path, served: StaticServer) -> None:
    asset = build_release(served.root, "0.34.2")
    layout = _layout(tmp_path)
    result = _run(fetch_script("0.34.2", "x86_64", served.url, asset.sha256, layout=layout))
    assert result.returncode == 0, result.stderr
    dest = Path(layout.version_dir("0.34.2"))
    assert (dest / "bin/ollama").is_file() and (dest / "lib/ollama/cuda_v12").is_dir()
    assert (dest / ".gpulab-sha256").read_text().strip() == asset.sha256
    assert not list(Path(layout.cache_dir).iterdir()), "the .part is removed after unpacking"
    assert not [p for p in Path(layout.opt_dir).iterdir() if p.name.startswith(".unpack")]


def test_unknown_checksum_comes_from_sha256sum_txt_of_the_same_base(
    tmp_path: Path, served: StaticServer
) -> None:
    build_release(served.root, "0.13.5")  # .tgz era
    layout = _layout(tmp_path)
    result = _run(fetch_script("0.13.5", "x86_64", served.url, None, layout=layout))
    assert result.returncode == 0, result.stderr
    assert served.count("/v0.13.5/sha256sum.txt", "GET") == 1
    assert served.count("/v0.13.5/ollama-linux-amd64.tgz", "GET") == 1
    assert (Path(layout.version_dir("0.13.5")) / "bin/ollama").is_file()


def test_interrupted_download_resumes_instead_of_starting_over(
    tmp_path: Path, served: StaticServer
) -> None:
    asset = build_release(served.root, "0.34.2")
    size = asset.path.stat().st_size
    served.fail_after("/" + asset.url_path, size // 3)
    layout = _layout(tmp_path)
    result = _run(fetch_script("0.34.2", "x86_64", served.url, asset.sha256, layout=layout))
    assert result.returncode == 0, result.stderr
    gets = served.requests_for("/" + asset.url_path, "GET")
    assert gets[0].interrupted and gets[-1].range == f"bytes={size // 3}-"
    assert served.bytes_served("/" + asset.url_path) == size


def test_a_complete_part_from_an_earlier_run_is_not_fetched_again(
    tmp_path: Path, served: StaticServer
) -> None:
    asset = build_release(served.root, "0.34.2")
    layout = _layout(tmp_path)
    part = Path(layout.cache_dir) / "ollama-0.34.2-ollama-linux-amd64.tar.zst.part"
    part.parent.mkdir(parents=True)
    shutil.copyfile(asset.path, part)
    result = _run(fetch_script("0.34.2", "x86_64", served.url, asset.sha256, layout=layout))
    assert result.returncode == 0, result.stderr
    assert served.bytes_served("/" + asset.url_path) == 0


def test_checksum_mismatch_fails_with_url_hashes_and_setting_and_changes_nothing(
    tmp_path: Path, served: StaticServer
) -> None:
    layout = _layout(tmp_path)
    old = build_release(served.root, "0.33.0")
    assert _run(fetch_script("0.33.0", "x86_64", served.url, old.sha256, layout=layout)
                ).returncode == 0
    new = build_release(served.root, "0.34.2")
    corrupt_release(new)
    actual = hashlib.sha256(new.path.read_bytes()).hexdigest()
    result = _run(fetch_script("0.34.2", "x86_64", served.url, None, layout=layout))
    assert result.returncode == 1
    assert f"{served.url}/{new.url_path}" in result.stderr
    assert new.sha256 in result.stderr and actual in result.stderr
    assert "ollama_sha256" in result.stderr and "ollama_download_base" in result.stderr
    assert sorted(p.name for p in Path(layout.opt_dir).iterdir()) == ["0.33.0"]
    assert not list(Path(layout.cache_dir).iterdir()), "a bad download is not resumed later"


def test_unreachable_download_names_the_url_and_keeps_the_part(tmp_path: Path,
                                                                served: StaticServer) -> None:
    layout = _layout(tmp_path)
    script = fetch_script("0.34.2", "x86_64", served.url + "/nothing", "0" * 64, layout=layout)
    result = _run(script.replace("sleep 2", "sleep 0"))
    assert result.returncode == 1
    assert f"{served.url}/nothing/v0.34.2/ollama-linux-amd64.tar.zst" in result.stderr
    assert "ollama_download_base" in result.stderr


def test_the_room_cache_mirror_is_laid_out_as_the_release_server_and_fetchable(
    tmp_path: Path, served: StaticServer
) -> None:
    asset = build_release(served.root, "0.34.2")
    arm64 = (asset.path.parent / "ollama-linux-arm64.tar.zst").read_bytes()
    size = asset.path.stat().st_size
    served.fail_after("/" + asset.url_path, size // 2)
    cache = tmp_path / "cache"
    mirrored = cache / "v0.34.2"
    for machine in ("x86_64", "aarch64"):
        result = _run(mirror_script("0.34.2", machine, served.url, None, str(mirrored)))
        assert result.returncode == 0, result.stderr
    assert served.requests_for("/" + asset.url_path, "GET")[-1].range == f"bytes={size // 2}-"
    assert sorted(p.name for p in mirrored.iterdir()) == [
        "ollama-linux-amd64.tar.zst", "ollama-linux-arm64.tar.zst", "sha256sum.txt"]
    assert (mirrored / "sha256sum.txt").read_text().splitlines() == [
        f"{asset.sha256}  ollama-linux-amd64.tar.zst",
        f"{hashlib.sha256(arm64).hexdigest()}  ollama-linux-arm64.tar.zst"]
    # A host fetches from the mirror exactly as from the release server, checksum included.
    with StaticServer(cache) as room_cache:
        layout = _layout(tmp_path)
        result = _run(fetch_script("0.34.2", "x86_64", room_cache.url, None, layout=layout))
        assert result.returncode == 0, result.stderr
        assert (Path(layout.version_dir("0.34.2")) / ".gpulab-sha256").read_text().strip() \
            == asset.sha256


def test_link_switch_is_atomic_and_moves_a_real_directory_aside(tmp_path: Path) -> None:
    for version in ("1", "2"):
        (tmp_path / version / "lib").mkdir(parents=True)
    link = tmp_path / "usr/lib/ollama"
    link.mkdir(parents=True)  # what install.sh leaves: a real directory
    (link / "old.so").write_text("x")
    assert _run(switch_link_script(str(link), str(tmp_path / "1/lib"))).returncode == 0
    assert os.readlink(link) == str(tmp_path / "1/lib")
    assert (tmp_path / "usr/lib/ollama.pre-gpulab/old.so").exists()
    assert _run(switch_link_script(str(link), str(tmp_path / "2/lib"))).returncode == 0
    assert os.readlink(link) == str(tmp_path / "2/lib")
    assert not (tmp_path / "usr/lib/ollama.gpulab-new").exists()
