"""A fresh Debian 12 root filesystem from the lab image, with /proc, /sys, /dev bound in.

Root only. Mounts are always undone, and the tree is deleted only once nothing is mounted
below it any more (deleting through a bound /dev would delete the host's device nodes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BINDS = ("proc", "sys", "dev", "dev/pts")
# invoke-rc.d asks this before starting a service: 101 = "not allowed", so package
# postinsts do not start daemons inside the chroot.
POLICY_RC_D = "#!/bin/sh\n# gpulab chroot test: no services start in here\nexit 101\n"


@dataclass(frozen=True)
class Rootfs:
    """The unpacked tree and the kernel its image boots (the one with headers)."""

    path: Path
    kernel: str

    def run(self, command: str, check: bool = True) -> str:
        """``command`` inside the chroot, through sh; stdout and stderr together."""
        done = subprocess.run(
            ["chroot", str(self.path), "sh", "-c", command],
            capture_output=True, text=True, check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{command!r} exited {done.returncode}:\n{done.stdout}"
                                 f"{done.stderr}")
        return done.stdout + done.stderr


def _mounted_below(path: Path) -> list[str]:
    prefix = str(path.resolve())
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def _unmount_all(path: Path) -> None:
    # Deepest first; -l as the last resort for a busy mount (a leftover process).
    for point in sorted(_mounted_below(path), key=len, reverse=True):
        if subprocess.run(["umount", point], check=False).returncode != 0:
            subprocess.run(["umount", "-l", point], check=False)


@pytest.fixture(scope="module")
def debian_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rootfs]:
    """A writable copy of the lab image's root filesystem, ready for ``@chroot``."""
    if os.geteuid() != 0:
        reason = "SKIPPED LOUDLY: chroot tests need root (chroot, mount --bind)"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(reason)
    from gpulab.lab.image import ensure_image, fresh_rootfs

    image = ensure_image(log=lambda line: None)
    root = tmp_path_factory.mktemp("chroot") / "rootfs"
    fresh_rootfs(root, image)
    try:
        resolv = root / "etc/resolv.conf"
        if resolv.is_symlink():
            resolv.unlink()
        shutil.copyfile("/etc/resolv.conf", resolv)
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text(POLICY_RC_D)
        policy.chmod(0o755)
        for sub in BINDS:
            subprocess.run(["mount", "--bind", f"/{sub}", str(root / sub)], check=True)
        yield Rootfs(root, image.kernel_version)
    finally:
        _unmount_all(root)
        if not _mounted_below(root):
            shutil.rmtree(root, ignore_errors=True)
