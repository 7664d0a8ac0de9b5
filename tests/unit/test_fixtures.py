"""Prove the TEST FIXTURE stand-ins (tests/fixtures/) are faithful to the upstreams they replace.

These are tests of test infrastructure only; the product never imports tests.fixtures.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import ollama_stub
from tests.fixtures.http_server import StaticServer
from tests.fixtures.nvidia_repo import KEYRING_PATH, TOOLKITS, build_repo
from tests.fixtures.ollama_release import (
    archive_name,
    build_release,
    corrupt_release,
)
from tests.fixtures.ubuntu_archive import ABI_A, ABI_B, UbuntuArchive
from tests.needs import needs

pytestmark = pytest.mark.unit


def _tar_members(archive: Path) -> list[tarfile.TarInfo]:
    raw = archive.read_bytes()
    if archive.name.endswith(".zst"):
        raw = subprocess.run(["zstd", "-dc"], input=raw, capture_output=True, check=True).stdout
    else:
        raw = gzip.decompress(raw)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return tar.getmembers()


def _extract_tar(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = f"zstd -dc '{archive}' | tar -xf - -C '{dest}'"
    subprocess.run(cmd, shell=True, check=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------
# Ollama release archive
# ------------------------------------------------------------------------------------------
@needs(shutil.which("zstd") is None, reason="zstd CLI missing")
def test_release_archive_layout_and_names(tmp_path: Path) -> None:
    asset = build_release(tmp_path, "0.14.0")
    assert asset.url_path == "v0.14.0/ollama-linux-amd64.tar.zst"
    assert asset.path == tmp_path / "v0.14.0" / "ollama-linux-amd64.tar.zst"
    assert asset.path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
    members = _tar_members(asset.path)
    names = [m.name for m in members]
    assert names[0] == "bin/ollama"
    assert all(n == "bin/ollama" or n.startswith("lib/ollama/") for n in names), names
    assert not any(n.startswith(("./", "/")) for n in names)
    assert {"lib/ollama/cuda_v12", "lib/ollama/cuda_v13"} <= {n.rstrip("/") for n in names}
    binary = members[0]
    assert binary.mode & 0o111 and binary.uid == 0 and binary.gid == 0

    old = build_release(tmp_path, "0.13.5")
    assert old.path.name == "ollama-linux-amd64.tgz" == archive_name("0.13.5")
    assert _tar_members(old.path)[0].name == "bin/ollama"


@needs(shutil.which("sha256sum") is None, reason="coreutils sha256sum missing")
def test_sha256sum_txt_matches_and_corruption_is_detected(tmp_path: Path) -> None:
    asset = build_release(tmp_path, "0.33.0-rc2")
    lines = asset.checksums_path.read_text().splitlines()
    listed = {name: sha for sha, name in (line.split("  ", 1) for line in lines)}
    # The release workflow runs `find . -type f ... | xargs sha256sum`: names start with "./".
    assert all(name.startswith("./") for name in listed)
    assert listed["./ollama-linux-amd64.tar.zst"] == asset.sha256
    assert lines[0].split("  ")[1] != "./ollama-linux-amd64.tar.zst"  # not simply line 1
    assert hashlib.sha256(asset.path.read_bytes()).hexdigest() == asset.sha256
    check = ["sha256sum", "--quiet", "-c", "sha256sum.txt"]
    assert subprocess.run(check, cwd=asset.path.parent, capture_output=True).returncode == 0

    corrupt_release(asset)
    assert hashlib.sha256(asset.path.read_bytes()).hexdigest() != asset.sha256
    assert subprocess.run(check, cwd=asset.path.parent, capture_output=True).returncode != 0
    again = build_release(tmp_path, "0.15.0", corrupt=True)
    assert hashlib.sha256(again.path.read_bytes()).hexdigest() != again.sha256


# ------------------------------------------------------------------------------------------
# the stub ollama binary
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ("http", "127.0.0.1", 11434)),
        ("0.0.0.0", ("http", "0.0.0.0", 11434)),
        ("0.0.0.0:8080", ("http", "0.0.0.0", 8080)),
        ("'10.0.2.15:11500'", ("http", "10.0.2.15", 11500)),
        ("http://example.test", ("http", "example.test", 80)),
        ("https://example.test", ("https", "example.test", 443)),
        ("example.test/path", ("http", "example.test", 11434)),
        ("[::1]:5000", ("http", "::1", 5000)),
        ("::1", ("http", "::1", 11434)),
    ],
)
def test_stub_parses_ollama_host_like_envconfig(raw: str, expected: tuple[str, str, int]) -> None:
    value = raw.strip().strip("\"'")
    assert ollama_stub.parse_host(value) == expected


def _gguf(kv: dict[str, Any]) -> bytes:
    """A header-only GGUF v3 file with string / uint32 values (enough for /api/show)."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)))
    for key, val in kv.items():
        kb = key.encode()
        out += struct.pack("<Q", len(kb)) + kb
        if isinstance(val, str):
            vb = val.encode()
            out += struct.pack("<IQ", 8, len(vb)) + vb
        else:
            out += struct.pack("<II", 4, val)
    return bytes(out)


def _blob(store: Path, data: bytes, colon: bool = False) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    name = digest if colon else digest.replace(":", "-")
    (store / "blobs").mkdir(parents=True, exist_ok=True)
    (store / "blobs" / name).write_bytes(data)
    return digest, len(data)


def _model(
    store: Path,
    name: str,
    weights: bytes,
    cfg: dict[str, Any] | None,
    extra: Sequence[tuple[str, bytes]] = (),
    mtime: float | None = None,
) -> str:
    layers = []
    wd, ws = _blob(store, weights)
    layers.append({"mediaType": "application/vnd.ollama.image.model", "digest": wd, "size": ws})
    for mt, data in extra:
        d, s = _blob(store, data)
        layers.append({"mediaType": mt, "digest": d, "size": s})
    if cfg is None:  # config layer whose blob is missing on disk
        config = {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": "sha256:" + "0" * 64,
            "size": 10,
        }
    else:
        cd, cs = _blob(store, json.dumps(cfg).encode())
        config = {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": cd,
            "size": cs,
        }
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": config,
            "layers": layers,
        }
    ).encode()
    path = store / "manifests" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(manifest)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return hashlib.sha256(manifest).hexdigest()


def _get(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


@pytest.fixture
def stub_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Extract a stand-in release and run its bin/ollama serve against a prepared store."""
    asset = build_release(tmp_path / "rel", "0.14.2")
    prefix = tmp_path / "usr-local"
    _extract_tar(asset.path, prefix)
    store = tmp_path / "models"
    cfg = {
        "model_format": "gguf",
        "model_family": "qwen2",
        "model_families": ["qwen2"],
        "model_type": "7.6B",
        "file_type": "Q4_K_M",
    }
    digests = {
        "qwen2.5:7b": _model(
            store,
            "registry.ollama.ai/library/qwen2.5/7b",
            _gguf({"general.architecture": "qwen2"}),
            cfg,
            [
                ("application/vnd.ollama.image.template", b"{{ .Tools }}"),
                ("application/vnd.ollama.image.license", b"Apache"),
            ],
            mtime=1_700_000_000,
        ),
        "znbang/bge:large-zh-v1.5-f16": _model(
            store,
            "registry.ollama.ai/znbang/bge/large-zh-v1.5-f16",
            _gguf({"general.architecture": "bert", "bert.pooling_type": 2,
                   "bert.embedding_length": 1024}),
            {
                "model_format": "gguf",
                "model_family": "bert",
                "model_families": ["bert"],
                "model_type": "324M",
                "file_type": "F16",
            },
            mtime=1_700_000_100,
        ),
        "10.0.0.5:9200/library/qwen2.5:7b": _model(
            store, "10.0.0.5:9200/library/qwen2.5/7b", b"weights", cfg, mtime=1_700_000_200
        ),
    }
    _model(store, "registry.ollama.ai/library/broken/latest", b"x", None)  # config blob missing
    (store / "manifests" / "registry.ollama.ai" / "library" / "qwen2.5" / ".DS_Store").write_text(
        ""
    )
    _blob(store, b"legacy colon-named blob", colon=True)

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
    env |= {
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(store),
        "HOME": str(tmp_path),
        "HTTPS_PROXY": "http://proxy.test:3128",
        "OLLAMA_KEEP_ALIVE": "-1",
    }
    exe = prefix / "bin" / "ollama"
    proc = subprocess.Popen(
        [str(exe), "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(base + "/", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"stub did not start: {proc.communicate()}") from None
            time.sleep(0.05)
    try:
        yield {
            "base": base,
            "proc": proc,
            "exe": exe,
            "env": env,
            "store": store,
            "digests": digests,
            "asset": asset,
            "prefix": prefix,
        }
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@needs(shutil.which("zstd") is None, reason="zstd CLI missing")
def test_stub_serves_the_api_from_the_store(stub_server: dict[str, Any]) -> None:
    base, store = stub_server["base"], stub_server["store"]
    assert _get(base + "/") == (200, "Ollama is running")
    assert _get(base + "/api/version") == (200, {"version": "0.14.2"})
    assert _get(base + "/api/version", method="HEAD")[0] == 200
    assert _get(base + "/api/ps") == (200, {"models": []})

    status, tags = _get(base + "/api/tags")
    assert status == 200
    models = {m["name"]: m for m in tags["models"]}
    # newest manifest first; the model with an unreadable config and the dot-file are skipped
    assert [m["name"] for m in tags["models"]] == [
        "10.0.0.5:9200/library/qwen2.5:7b",
        "znbang/bge:large-zh-v1.5-f16",
        "qwen2.5:7b",
    ]
    qwen = models["qwen2.5:7b"]
    assert qwen["model"] == "qwen2.5:7b"
    assert qwen["digest"] == stub_server["digests"]["qwen2.5:7b"]
    manifest = json.loads((store / "manifests/registry.ollama.ai/library/qwen2.5/7b").read_bytes())
    assert qwen["size"] == sum(x["size"] for x in manifest["layers"]) + manifest["config"]["size"]
    assert qwen["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "qwen2",
        "families": ["qwen2"],
        "parameter_size": "7.6B",
        "quantization_level": "Q4_K_M",
    }
    assert qwen["modified_at"].startswith(("2023-11-14T", "2023-11-15T"))
    assert not list((store / "blobs").glob("sha256:*"))  # fixblobs renamed the legacy blob

    status, err = _get(base + "/api/show", "POST", {"model": "nope:1b"})
    assert (status, err) == (404, {"error": "model 'nope:1b' not found"})
    status, show = _get(base + "/api/show", "POST", {"model": "qwen2.5:7b"})
    assert status == 200 and show["capabilities"] == ["completion", "tools"]
    assert show["license"] == "Apache" and show["details"]["family"] == "qwen2"
    status, show = _get(base + "/api/show", "POST", {"name": "znbang/bge:large-zh-v1.5-f16"})
    assert status == 200 and show["capabilities"] == ["embedding"]
    assert show["model_info"]["general.architecture"] == "bert"
    status, embedded = _get(base + "/api/embed", "POST",
                            {"model": "znbang/bge:large-zh-v1.5-f16", "input": ["a", "b"]})
    assert status == 200 and [len(v) for v in embedded["embeddings"]] == [1024, 1024]
    assert _get(base + "/api/embed", "POST", {"model": "nope:1b", "input": "a"})[0] == 404

    status, env = _get(base + "/api/stub/env")
    assert status == 200 and env["stub"] is True
    assert env["env"]["OLLAMA_KEEP_ALIVE"] == "-1"
    assert env["env"]["HTTPS_PROXY"] == "http://proxy.test:3128"
    assert env["models"] == str(store) and env["libdir_exists"] is True
    assert _get(base + "/api/nothing")[0] == 404


@needs(shutil.which("zstd") is None, reason="zstd CLI missing")
def test_stub_cli_and_clean_sigterm(stub_server: dict[str, Any]) -> None:
    exe, env, proc = stub_server["exe"], stub_server["env"], stub_server["proc"]
    out = subprocess.run([str(exe), "-v"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout == "ollama version is 0.14.2\n"
    listing = subprocess.run([str(exe), "list"], env=env, capture_output=True, text=True)
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert any(line.startswith("qwen2.5:7b ") for line in lines)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    stdout, stderr = proc.communicate()
    port = env["OLLAMA_HOST"].rsplit(":", 1)[1]
    assert f'msg="Listening on 127.0.0.1:{port} (version 0.14.2)"' in stderr
    assert '"/api/tags"' in stdout  # GIN request log line from `ollama list`

    # server gone: the real CLI's two warning lines, still exit 0
    out = subprocess.run([str(exe), "--version"], env=env, capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout == (
        "Warning: could not connect to a running Ollama instance\n"
        "Warning: client version is 0.14.2\n"
    )


# ------------------------------------------------------------------------------------------
# HTTP server
# ------------------------------------------------------------------------------------------
def _raw_get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=5)
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), headers=headers or {})
        resp = conn.getresponse()
        try:
            body = resp.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def test_http_server_ranges_head_and_log(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "blob.bin").write_bytes(data)
    with StaticServer(tmp_path) as srv:
        assert srv.guest_url == f"http://10.0.2.2:{srv.port}"
        url = srv.url + "/d/blob.bin"
        status, headers, body = _raw_get(url + "?version=1")
        assert (status, body) == (200, data) and headers["content-length"] == str(len(data))
        assert headers["accept-ranges"] == "bytes"
        status, headers, body = _raw_get(url, {"Range": "bytes=100-199"})
        assert status == 206 and body == data[100:200]
        assert headers["content-range"] == f"bytes 100-199/{len(data)}"
        assert headers["content-length"] == "100"
        assert _raw_get(url, {"Range": "bytes=10000-"})[2] == data[10000:]
        assert _raw_get(url, {"Range": "bytes=-5"})[2] == data[-5:]
        status, headers, _ = _raw_get(url, {"Range": "bytes=99999-"})
        assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"
        status, headers, body = _raw_get(url, method="HEAD")
        assert (status, body, headers["content-length"]) == (200, b"", str(len(data)))
        assert _raw_get(srv.url + "/d/missing")[0] == 404
        assert _raw_get(srv.url + "/../etc/passwd")[0] == 404

        assert srv.count("/d/blob.bin", "GET") == 5
        assert srv.count("/d/blob.bin", "HEAD") == 1
        assert [r.status for r in srv.requests_for("/d/blob.bin", "GET")] == [
            200,
            206,
            206,
            206,
            416,
        ]
        assert srv.requests_for("/d/blob.bin")[0].query == "version=1"
        srv.clear_log()
        assert srv.requests == []


def test_http_server_interrupted_transfer_then_resume(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "v0.14.0").mkdir()
    (tmp_path / "v0.14.0" / "big.tar.zst").write_bytes(data)
    path = "/v0.14.0/big.tar.zst"
    with StaticServer(tmp_path) as srv:
        srv.fail_after(path, 70_000)
        status, headers, first = _raw_get(srv.url + path)
        assert status == 200 and headers["content-length"] == str(len(data))
        assert first == data[:70_000]  # connection dropped before Content-Length was reached
        rec = srv.requests_for(path)[-1]
        assert rec.interrupted and rec.bytes_sent == 70_000

        # a resuming client asks for the rest; the hook fired once only
        status, _, rest = _raw_get(srv.url + path, {"Range": f"bytes={len(first)}-"})
        assert status == 206 and first + rest == data
        assert srv.bytes_served(path) == len(data)

        # curl -C - behaves the same way against it
        if shutil.which("curl"):
            out = tmp_path / "dl"
            srv.fail_after(path, 1000)
            first_try = subprocess.run(["curl", "-sf", "-o", str(out), srv.url + path])
            assert first_try.returncode != 0 and out.stat().st_size == 1000
            subprocess.run(["curl", "-sf", "-C", "-", "-o", str(out), srv.url + path], check=True)
            assert out.read_bytes() == data


# ------------------------------------------------------------------------------------------
# NVIDIA CUDA apt repository
# ------------------------------------------------------------------------------------------
_NEED_DEB_TOOLS = any(shutil.which(t) is None for t in ("dpkg-deb", "gpg", "gpgv"))


@pytest.fixture(scope="module")
def cuda_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StaticServer, Any]]:
    root = tmp_path_factory.mktemp("cuda-repos")
    with StaticServer(root) as srv:
        info = build_repo(root, "debian12", srv.url)
        yield srv, info


def _deb_field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


@needs(_NEED_DEB_TOOLS, reason="dpkg-deb/gpg/gpgv missing")
def test_cuda_repo_packages_and_signature(
    cuda_repo: tuple[StaticServer, Any], tmp_path: Path
) -> None:
    srv, info = cuda_repo
    repo: Path = info.path
    assert repo == repo.parents[1] / "debian12" / "x86_64"
    assert info.keyring_deb.name == "cuda-keyring_1.1-1_all.deb"
    assert {"Packages", "Packages.gz", "Release", "InRelease", "Release.gpg"} <= {
        p.name for p in repo.iterdir()
    }

    # keyring package: files, key and the source line pointing at the stand-in
    root = tmp_path / "kr"
    subprocess.run(["dpkg-deb", "-x", str(info.keyring_deb), str(root)], check=True)
    keyring = root / KEYRING_PATH.lstrip("/")
    sources = (root / "etc/apt/sources.list.d/cuda-debian12-x86_64.list").read_text()
    assert sources == (f"deb [signed-by={KEYRING_PATH}] {srv.url}/debian12/x86_64/ /\n")
    assert (
        "Pin-Priority: 600" in (root / "etc/apt/preferences.d/cuda-repository-pin-600").read_text()
    )
    listed = subprocess.run(
        ["gpg", "--show-keys", "--with-colons", str(keyring)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"fpr:::::::::{info.key_fingerprint}:" in listed

    for signed in (["Release.gpg", "Release"], ["InRelease"]):
        ok = subprocess.run(
            ["gpgv", "--keyring", str(keyring), *signed], cwd=repo, capture_output=True, text=True
        )
        assert ok.returncode == 0, ok.stderr

    release = (repo / "Release").read_text()
    assert "Label: NVIDIA CUDA" in release and "Architectures: amd64" in release
    packages = (repo / "Packages").read_bytes()
    assert hashlib.sha256(packages).hexdigest() in release
    assert gzip.decompress((repo / "Packages.gz").read_bytes()) == packages

    expected = {
        ("cuda-drivers-580", "580.95.05-1"),
        ("nvidia-open-580", "580.95.05-1"),
        ("nvidia-driver-pinning-590", "590.48.01-1"),
        ("nvidia-open", "590.48.01-1"),
        ("cuda-drivers", "590.48.01-1"),
        ("nvidia-driver", "580.95.05-1"),
        ("nvidia-driver", "590.48.01-1"),
        ("cuda-toolkit-12-6", "12.6.2-1"),
        ("cuda-toolkit-12-6", "12.6.3-1"),
        ("cuda-toolkit-13-0", "13.0.0-1"),
        ("cuda-toolkit-13-0", "13.0.2-1"),
        ("cuda-toolkit-12-2", "12.2.0-1"),
        ("cuda-keyring", "1.1-1"),
    }
    assert {(p.name, p.version) for p in info.packages} == expected
    for pkg in info.packages:
        deb = repo / pkg.filename
        assert (_deb_field(deb, "Package"), _deb_field(deb, "Version")) == (pkg.name, pkg.version)
        assert f"Filename: ./{pkg.filename}\n" in packages.decode()
    info_out = subprocess.run(
        ["dpkg-deb", "-I", str(repo / "cuda-drivers-580_580.95.05-1_amd64.deb")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Depends: nvidia-driver (= 580.95.05-1)" in info_out

    # a toolkit package: version.json shape, nvcc banner, alternatives in postinst
    tk_root = tmp_path / "tk"
    deb = repo / "cuda-toolkit-12-6_12.6.3-1_amd64.deb"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tk_root)], check=True)
    vj = (tk_root / "usr/local/cuda-12.6/version.json").read_text()
    assert '   "cuda" : {\n      "name" : "CUDA SDK",\n      "version" : "12.6.3"\n   },' in vj
    nvcc = subprocess.run(
        [str(tk_root / "usr/local/cuda-12.6/bin/nvcc"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Cuda compilation tools, release 12.6, V12.6.85\n" in nvcc
    assert nvcc.startswith("nvcc: NVIDIA (R) Cuda compiler driver\n")
    ctrl = tmp_path / "ctrl"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(ctrl)], check=True)
    postinst = (ctrl / "postinst").read_text()
    assert "update-alternatives --install /usr/local/cuda cuda /usr/local/cuda-12.6 126" in postinst
    assert "--install /usr/local/cuda-12 cuda-12 /usr/local/cuda-12.6 126" in postinst
    assert "update-alternatives --remove cuda /usr/local/cuda-12.6" in (ctrl / "prerm").read_text()
    assert set(TOOLKITS) == {"12.2.0", "12.6.2", "12.6.3", "13.0.0", "13.0.2"}

    drv = tmp_path / "drv"
    subprocess.run(
        ["dpkg-deb", "-x", str(repo / "nvidia-driver_590.48.01-1_amd64.deb"), str(drv)], check=True
    )
    assert (drv / "usr/lib/nvidia-stub/version").read_text() == "590.48.01\n"
    assert (drv / "usr/share/doc/nvidia-driver/TEST-FIXTURE").is_file()
    assert not list(drv.rglob("*.ko"))


@needs(
    _NEED_DEB_TOOLS or shutil.which("apt-get") is None or os.geteuid() != 0,
    reason="needs dpkg tools, apt-get and root",
)
def test_apt_reads_the_stand_in_repo(cuda_repo: tuple[StaticServer, Any], tmp_path: Path) -> None:
    srv, info = cuda_repo
    kr = tmp_path / "kr"
    subprocess.run(["dpkg-deb", "-x", str(info.keyring_deb), str(kr)], check=True)
    prefs = kr / "etc/apt/preferences.d"
    pin = tmp_path / "pinning"
    subprocess.run(
        [
            "dpkg-deb",
            "-x",
            str(info.path / "nvidia-driver-pinning-590_590.48.01-1_all.deb"),
            str(pin),
        ],
        check=True,
    )
    shutil.copy(pin / "etc/apt/preferences.d/nvidia-driver-pinning-590", prefs)
    sources = tmp_path / "sources.list"
    # the keyring package's own source line, with its keyring path moved into the temp root
    line = (kr / "etc/apt/sources.list.d/cuda-debian12-x86_64.list").read_text()
    sources.write_text(line.replace(KEYRING_PATH, str(kr / KEYRING_PATH.lstrip("/"))))
    for d in ("state/lists/partial", "cache/archives/partial", "empty"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "status").write_text("")
    opts = [
        "-o", f"Dir::Etc::sourcelist={sources}",
        "-o", f"Dir::Etc::sourceparts={tmp_path / 'empty'}",
        "-o", f"Dir::Etc::preferences={tmp_path / 'empty' / 'none'}",
        "-o", f"Dir::Etc::preferencesparts={prefs}",
        "-o", f"Dir::Etc::trustedparts={tmp_path / 'empty'}",
        "-o", f"Dir::State={tmp_path / 'state'}",
        "-o", f"Dir::State::status={tmp_path / 'status'}",
        "-o", f"Dir::Cache={tmp_path / 'cache'}",
        "-o", "APT::Architecture=amd64", "-o", "APT::Architectures=amd64",
        "-o", "APT::Sandbox::User=root", "-o", "Debug::NoLocking=1",
        "-o", "Acquire::Languages=none",
    ]  # fmt: skip
    env = dict(os.environ, LC_ALL="C")
    upd = subprocess.run(
        ["apt-get", *opts, "update"], capture_output=True, text=True, env=env, timeout=60
    )
    assert upd.returncode == 0, upd.stdout + upd.stderr
    assert "W:" not in upd.stdout + upd.stderr, upd.stdout + upd.stderr
    assert srv.count("/debian12/x86_64/InRelease", "GET") >= 1

    policy = subprocess.run(
        ["apt-cache", *opts, "policy", "cuda-toolkit-12-6", "nvidia-driver"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    toolkit, driver = policy.split("nvidia-driver:")
    assert "12.6.3-1 600" in toolkit and "12.6.2-1 600" in toolkit
    assert "Candidate: 12.6.3-1" in toolkit
    # nvidia-driver-pinning-590 raises the 590 build to 1000; 580 keeps the repo's 600
    assert "590.48.01-1 1000" in driver and "580.95.05-1 600" in driver


# ------------------------------------------------------------------------------------------
# Ubuntu archive: kernel flavour metas and prebuilt NVIDIA modules
# ------------------------------------------------------------------------------------------
def _stanzas(packages: str) -> list[dict[str, str]]:
    return [dict(line.split(": ", 1) for line in block.splitlines())
            for block in packages.strip().split("\n\n")]


@needs(_NEED_DEB_TOOLS, reason="dpkg-deb/gpg/gpgv missing")
def test_ubuntu_archive_has_the_real_dependency_shape_per_abi(tmp_path: Path) -> None:
    archive = UbuntuArchive(tmp_path / "ubuntu")
    archive.publish(ABI_A)
    archive.publish(ABI_B)
    suite = tmp_path / "ubuntu/dists/noble-updates"
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(archive.keyring)
    ok = subprocess.run(["gpgv", "--keyring", str(keyring), "InRelease"], cwd=suite,
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    release = (suite / "Release").read_text()
    assert "Origin: Ubuntu\n" in release and "Suite: noble-updates\n" in release
    stanzas = _stanzas((suite / "main/binary-amd64/Packages").read_text())
    depends = {(s["Package"], s["Version"]): s.get("Depends", "") for s in stanzas}
    # Both publications stay listed: the metas at A and at B, each pointing at its own ABI.
    assert depends[("linux-generic", ABI_B.version)] == (
        f"linux-image-generic (= {ABI_B.version}), linux-headers-generic (= {ABI_B.version})")
    assert depends[("linux-image-generic", ABI_A.version)] == ABI_A.image
    assert depends[("linux-modules-nvidia-580-open-generic", ABI_B.version)] == ABI_B.modules
    modules = depends[(ABI_B.modules, ABI_B.version)]
    assert modules.startswith(f"{ABI_B.image} | ")
    assert modules.endswith("nvidia-kernel-common-580 (<= 580.105.08-1), "
                            "nvidia-kernel-common-580 (>= 580.105.08)")
    for stanza in stanzas:
        deb = tmp_path / "ubuntu" / stanza["Filename"]
        files = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                               check=True).stdout
        # Harmless on any guest: documentation files only, never /boot or /lib/modules.
        paths = [line.split()[-1] for line in files.splitlines() if not line.endswith("/")]
        assert paths and all(p.startswith("./usr/share/doc/") for p in paths), files
