"""The Vagrant rehearsal for real: the repository's Vagrantfile, the box ``gpulab lab box``
makes, vagrant-libvirt, ``inventories/vagrant.py``, ``deploy/gpu_host.py`` and ``gpulab verify``.

``vagrant validate`` runs wherever Vagrant is installed. The rehearsal boots ONE guest
(``GPULAB_VAGRANT_HOSTS=1``, TCG: ``GPULAB_VAGRANT_LIBVIRT_DRIVER=qemu``) with a libvirtd of
the test's own inside a network namespace the test makes (``tests/private_libvirt.py``): the
guest's network and address exist only there, and pyinfra and ``gpulab verify`` run there
(``ip netns exec``). Vagrant's state (``VAGRANT_HOME``, ``VAGRANT_DOTFILE_PATH``) lives in the
test's folder, so a user's boxes and machines are never touched.

The guest reaches, at the namespace's libvirt gateway, the stand-in apt proxy (to this
machine's Debian mirror) and the Ollama release stand-in; the deploy and verify get them
through ``group_data/vagrant.py`` in the folder they run from, as a user adds rehearsal data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpulab.lab.image import SUITE, ImagePaths
from gpulab.lab.mirror import host_mirrors
from gpulab.lab.vagrant import BOX_NAME, MANAGEMENT_GATEWAY
from tests.fixtures.apt_proxy import AptProxy
from tests.fixtures.http_server import StaticServer
from tests.fixtures.ollama_release import build_release
from tests.integration.conftest import UNAVAILABLE
from tests.integration.outcomes import assert_ready, assert_unchanged, verify
from tests.needs import skip_or_fail
from tests.phases import record_phase, timed
from tests.private_libvirt import LibvirtUnavailable, PrivateLibvirt, missing_tools
from tests.pyinfra_run import run_pyinfra

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GUEST = "lab-01"
OLLAMA = "0.33.0"  # not in gpulab's checksum table: the release's sha256sum.txt verifies it
NETNS = f"gpulab-vagrant-{os.getpid()}"


def _require(why: list[str]) -> None:
    if why:
        msg = "Vagrant rehearsal unavailable: " + "; ".join(why)
        if msg not in UNAVAILABLE:
            UNAVAILABLE.append(msg)
        skip_or_fail(msg)


def _vagrant_env(tmp: Path, **extra: str) -> dict[str, str]:
    return {"VAGRANT_HOME": str(tmp / "vagrant.d"), "VAGRANT_DOTFILE_PATH": str(tmp / "dot"),
            "VAGRANT_CHECKPOINT_DISABLE": "1", **extra}


def _vagrant(tmp: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **_vagrant_env(tmp, **extra)}
    return subprocess.run(["vagrant", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, check=False, env=env)


@pytest.mark.parametrize("env", [
    {},
    {"GPULAB_VAGRANT_BOX": "bento/ubuntu-24.04", "GPULAB_VAGRANT_HOSTS": "3",
     "GPULAB_VAGRANT_MEMORY": "4096", "GPULAB_VAGRANT_CPUS": "1"},
    {"GPULAB_VAGRANT_LIBVIRT_DRIVER": "qemu"},
], ids=["defaults", "bento-3-hosts", "tcg"])
def test_vagrantfile_validates(tmp_path: Path, env: dict[str, str]) -> None:
    _require([] if shutil.which("vagrant") else ["vagrant not installed"])
    done = _vagrant(tmp_path, "validate", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    status = _vagrant(tmp_path, "status", **env)
    hosts = int(env.get("GPULAB_VAGRANT_HOSTS", "2"))
    assert [line.split()[0] for line in status.stdout.splitlines()
            if line.startswith("lab-")] == [f"lab-{i:02d}" for i in range(1, hosts + 1)]


def test_vagrantfile_refuses_a_bad_setting(tmp_path: Path) -> None:
    _require([] if shutil.which("vagrant") else ["vagrant not installed"])
    done = _vagrant(tmp_path, "validate", GPULAB_VAGRANT_HOSTS="two")
    assert done.returncode != 0
    assert 'GPULAB_VAGRANT_HOSTS="two": a whole number' in done.stderr


@pytest.fixture
def libvirt(tmp_path: Path) -> Iterator[PrivateLibvirt]:
    _require(missing_tools())
    with timed("vagrant: private libvirtd in its netns (start + QEMU probe)"):
        try:
            lv = PrivateLibvirt(tmp_path / "libvirt", NETNS).__enter__()
        except LibvirtUnavailable as error:
            pytest.fail(f"LIBVIRT CANNOT RUN HERE: {error}", pytrace=False)
    try:
        yield lv
    finally:
        lv.stop()


def test_rehearsal_up_deploy_rerun_verify_destroy(
    lab_image: ImagePaths, libvirt: PrivateLibvirt, tmp_path: Path
) -> None:
    with timed("vagrant: gpulab lab box (box built or cached, vagrant box add)"):
        added = subprocess.run([sys.executable, "-m", "gpulab.cli", "lab", "box"], cwd=REPO,
                               capture_output=True, text=True, timeout=900, check=False,
                               env={**os.environ, **_vagrant_env(tmp_path)})
    assert added.returncode == 0, added.stdout + added.stderr
    assert f"box {BOX_NAME} added" in added.stdout

    mirrors = host_mirrors(SUITE)
    upstreams = {urllib.parse.urlsplit(u).hostname or "" for u in (mirrors.archive,
                                                                    mirrors.security) if u}
    env = _vagrant_env(tmp_path, LIBVIRT_DEFAULT_URI=libvirt.uri, GPULAB_VAGRANT_HOSTS="1",
                       GPULAB_VAGRANT_LIBVIRT_DRIVER="qemu", GPULAB_VAGRANT_MEMORY="1536")
    work = tmp_path / "work"
    (work / "group_data").mkdir(parents=True)
    releases = StaticServer(tmp_path / "www", host="0.0.0.0", netns=NETNS)
    with AptProxy(NETNS, upstreams) as proxy, releases:
        build_release(releases.root, OLLAMA)
        data = {"apt_proxy": f"http://{MANAGEMENT_GATEWAY}:{proxy.port}",
                "ollama_download_base": f"http://{MANAGEMENT_GATEWAY}:{releases.port}",
                "ollama_version": OLLAMA, "models": []}
        (work / "group_data/vagrant.py").write_text(
            "".join(f"{key} = {value!r}\n" for key, value in data.items()))
        try:
            with timed("vagrant: vagrant up --provider libvirt (1 guest, TCG)"):
                up = libvirt.run(["vagrant", "up", "--provider", "libvirt"], env=env, cwd=REPO)
            print("\n".join(line for line in up.stdout.splitlines()  # vagrant's steps, with -s
                            if "Progress:" not in line), flush=True)
            assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]

            inventory = REPO / "inventories/vagrant.py"
            in_ns = ("ip", "netns", "exec", NETNS)
            first = run_pyinfra(inventory, REPO / "deploy/gpu_host.py", cwd=work, env=env,
                                prefix=in_ns, timeout=1800)
            record_phase(f"vagrant: deploy/gpu_host.py, first run (rc {first.rc})",
                         first.seconds)
            assert first.rc == 0, first.describe()
            assert GUEST in first.changed_hosts, first.describe()
            assert proxy.forwarded > 0 and proxy.refused == [], proxy.refused

            rerun = run_pyinfra(inventory, REPO / "deploy/gpu_host.py", cwd=work, env=env,
                                prefix=in_ns, timeout=1800)
            record_phase(f"vagrant: deploy/gpu_host.py, rerun (rc {rerun.rc})", rerun.seconds)
            assert_unchanged(rerun, [GUEST])

            verdict = verify(inventory, label="vagrant guest", cwd=work, prefix=in_ns, env=env)
            assert_ready(verdict, [GUEST])
            assert verdict.hosts[GUEST]["Is the pinned Ollama installed?"][0] == "pass"
        finally:
            with timed("vagrant: vagrant destroy -f"):
                destroyed = libvirt.run(["vagrant", "destroy", "-f"], env=env, cwd=REPO)
        assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    left = libvirt.run(["virsh", "-c", libvirt.uri, "list", "--all", "--name"])
    assert left.returncode == 0 and left.stdout.strip() == "", left.stdout + left.stderr
