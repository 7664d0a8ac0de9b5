"""Build (once per machine) the Debian 12 image the test fleet boots.

Why this shape:
- mmdebstrap with the archive, ``-updates`` and ``-security`` suites at once resolves the newest
  kernel and headers in one pass; a ``full-upgrade`` hook then proves they are in step (DKMS
  builds need headers for the kernel that actually boots).
- ``mkfs.ext4 -d`` fills the filesystem from a directory, so no loop device or mount is needed
  (containers and CI runners often forbid them).
- The cache is keyed by a hash of the recipe (packages, guest configuration, this file's source,
  the host's extra CA certificates): editing any of them rebuilds, nothing else does. Builds go to
  a temporary directory renamed into place, under a lock, so concurrent test runs never see a
  half-built image.
- The image keeps its apt package lists (mmdebstrap would clean them) and has no translation
  indices: under TCG a guest's first ``apt-get update`` took 50 s from empty lists, and 32 MB
  of ``Translation-en`` are hashed and parsed again on every update for descriptions nobody
  reads on a test guest (measured on this project's 2-core machines).
- ``rootfs.tar`` keeps the configured tree for chroot tests (e.g. a real DKMS build), which need
  a fresh writable copy each time: see :func:`fresh_rootfs`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gpulab.lab.mirror import Mirrors, host_mirrors

SUITE = "bookworm"
PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "linux-image-amd64",
    "linux-headers-amd64",
    "initramfs-tools",
    "python3",
    "sudo",
    "ca-certificates",
    "iproute2",
    "kmod",
    "zstd",
    "curl",
    "gnupg",
    "rsync",  # as on Ubuntu's images: the seeded models' copy uses it
    "libnss-myhostname",  # the per-guest hostname resolves without editing /etc/hosts
)
DISK_SIZE = "8G"
IMAGE_HOSTNAME = "lab"

# Files written into the tree before imaging. Part of the recipe hash.
GUEST_FILES: dict[str, str] = {
    "etc/fstab": "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n",
    "etc/hostname": f"{IMAGE_HOSTNAME}\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    # user-mode networking: DHCP on 10.0.2.0/24, DNS forwarder at 10.0.2.3, host at 10.0.2.2
    "etc/resolv.conf": "nameserver 10.0.2.3\n",
    "etc/systemd/network/80-lab-dhcp.network": "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n",
    "etc/ssh/sshd_config.d/50-gpulab-lab.conf": (
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUseDNS no\n"
    ),
    # keep guest journals small: overlays stay small and snapshots cheap
    "etc/systemd/journald.conf.d/50-gpulab-lab.conf": "[Journal]\nSystemMaxUse=32M\n",
}
# Units that would take the dpkg lock or stall boot right after first start.
MASKED_UNITS: tuple[str, ...] = (
    "apt-daily.timer",
    "apt-daily.service",
    "apt-daily-upgrade.timer",
    "apt-daily-upgrade.service",
    "systemd-networkd-wait-online.service",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
)
ENABLED_UNITS: tuple[str, ...] = ("systemd-networkd.service", "ssh.service")
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")

Log = Callable[[str], None]
APT_OPTIONS: tuple[str, ...] = ('Acquire::Retries "3";', 'Acquire::Languages "none";')


@dataclass(frozen=True)
class ImagePaths:
    """Everything a booted guest or a chroot test needs from the cached image."""

    dir: Path
    qcow2: Path
    kernel: Path
    initrd: Path
    ssh_key: Path  # private ed25519 key for root, one per cache entry
    ssh_pubkey: Path
    known_hosts: Path  # the image's host keys as ``[127.0.0.1]:*`` lines (OpenSSH wildcard)
    host_keys: Path  # bare ``type base64`` public host keys, to render per-port entries
    rootfs_tar: Path  # the configured root filesystem, for chroot tests
    kernel_version: str
    build_seconds: float
    cache_hit: bool


def cache_root() -> Path:
    """``$GPULAB_CACHE`` or ``~/.cache/gpulab``: outside the repository, shared by checkouts."""
    env = os.environ.get("GPULAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gpulab"


def _extra_ca_certs(ca_dir: Path = EXTRA_CA_DIR) -> dict[str, bytes]:
    if not ca_dir.is_dir():
        return {}
    return {
        str(p.relative_to(ca_dir)): p.read_bytes()
        for p in sorted(ca_dir.rglob("*.crt"))
        if p.is_file()
    }


def recipe(ca_certs: dict[str, bytes] | None = None) -> dict[str, object]:
    """The inputs that define the image; stable ordering so the hash is stable."""
    certs = _extra_ca_certs() if ca_certs is None else ca_certs
    return {
        "suite": SUITE,
        "packages": sorted(PACKAGES),
        "files": dict(sorted(GUEST_FILES.items())),
        "masked": sorted(MASKED_UNITS),
        "enabled": sorted(ENABLED_UNITS),
        "disk": DISK_SIZE,
        "ca_certs": {k: hashlib.sha256(v).hexdigest() for k, v in sorted(certs.items())},
        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
    }


def recipe_hash(rec: dict[str, object] | None = None) -> str:
    """16 hex digits of sha256 over the canonical JSON of :func:`recipe`."""
    data = json.dumps(recipe() if rec is None else rec, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def cached_image(d: Path) -> ImagePaths:
    """The image already built in cache entry ``d`` (no rebuild check)."""
    meta = json.loads((d / "meta.json").read_text())
    return _paths(d, meta, cache_hit=True)


def _paths(d: Path, meta: dict[str, object], cache_hit: bool) -> ImagePaths:
    return ImagePaths(
        dir=d,
        qcow2=d / "base.qcow2",
        kernel=d / "vmlinuz",
        initrd=d / "initrd.img",
        ssh_key=d / "id_ed25519",
        ssh_pubkey=d / "id_ed25519.pub",
        known_hosts=d / "known_hosts",
        host_keys=d / "host_keys.pub",
        rootfs_tar=d / "rootfs.tar",
        kernel_version=str(meta.get("kernel_version", "")),
        build_seconds=float(str(meta.get("build_seconds", 0.0))),
        cache_hit=cache_hit,
    )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_image(cache_dir: Path | None = None, log: Log = print) -> ImagePaths:
    """Return the cached image for the current recipe, building it first if needed.

    Needs root, ``mmdebstrap`` (or ``debootstrap``), ``mkfs.ext4`` and ``qemu-img``.
    """
    images = (cache_dir or cache_root()) / "images"
    key = recipe_hash()
    final = images / key
    with _locked(images / f".{key}.lock"):
        meta_file = final / "meta.json"
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            log(f"image cache hit: {final} (built in {meta.get('build_seconds', 0):.0f} s)")
            return _paths(final, meta, cache_hit=True)
        images.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=images))
        try:
            meta = _build(tmp, log)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return _paths(final, meta, cache_hit=False)


def fresh_rootfs(dest: Path, image: ImagePaths | None = None) -> Path:
    """Unpack a fresh, writable copy of the image's root filesystem into ``dest`` (root only).

    For ``@chroot`` tests: bind ``/proc``, ``/sys``, ``/dev``, ``/dev/pts`` yourself and copy
    the host's ``/etc/resolv.conf`` in if the chroot needs the network (the tree's points at
    QEMU's 10.0.2.3).
    """
    img = image or ensure_image()
    dest.mkdir(parents=True, exist_ok=True)
    _run(["tar", "--numeric-owner", "--xattrs", "-xpf", str(img.rootfs_tar), "-C", str(dest)])
    return dest


def _run(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def _apt_lines(m: Mirrors) -> list[str]:
    lines = [f"deb {m.archive} {SUITE} main", f"deb {m.archive} {SUITE}-updates main"]
    if m.security:
        lines.append(f"deb {m.security} {SUITE}-security main")
    return lines


def _bootstrap(rootfs: Path, mirrors: Mirrors, ca_dir: Path, log: Log) -> None:
    pkgs = ",".join(PACKAGES)
    hook_ca = (
        f'mkdir -p "$1/usr/local/share/ca-certificates" && '
        f'cp -r {ca_dir}/. "$1/usr/local/share/ca-certificates/" && '
        'chroot "$1" update-ca-certificates'
    )
    hook_upgrade = (
        'chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Use-Pty=0 '
        "full-upgrade"
    )
    if shutil.which("mmdebstrap"):
        cmd = [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            f"--include={pkgs}",
            *(f"--aptopt={option}" for option in APT_OPTIONS),
            "--skip=cleanup/apt/lists",
        ]
        if _extra_ca_certs(ca_dir):
            # TLS-intercepting egress proxies: the guest trusts what the host trusts
            cmd.append(f"--customize-hook={hook_ca}")
        cmd += [f"--customize-hook={hook_upgrade}", SUITE, str(rootfs), *_apt_lines(mirrors)]
        log("image: " + " ".join(cmd[:4]) + " ...")
        _run(cmd)
        return
    if not shutil.which("debootstrap"):
        raise RuntimeError("neither mmdebstrap nor debootstrap is installed")
    _run(["debootstrap", "--variant=minbase", f"--include={pkgs}", SUITE, str(rootfs),
          mirrors.archive])
    (rootfs / "etc/apt/sources.list").write_text("\n".join(_apt_lines(mirrors)) + "\n")
    (rootfs / "etc/apt/apt.conf.d/99gpulab-lab").write_text("\n".join(APT_OPTIONS) + "\n")
    for sub in ("proc", "sys", "dev"):
        _run(["mount", "--bind", f"/{sub}", str(rootfs / sub)])
    try:
        _run(["sh", "-c", 'chroot "$1" apt-get update', "-", str(rootfs)])
        _run(["sh", "-c", hook_upgrade, "-", str(rootfs)])
        if _extra_ca_certs(ca_dir):
            _run(["sh", "-c", hook_ca, "-", str(rootfs)])
    finally:
        for sub in ("dev", "sys", "proc"):
            subprocess.run(["umount", "-l", str(rootfs / sub)], check=False)


def _configure(rootfs: Path, out: Path) -> str:
    """Write the guest configuration; return the kernel version. Why each step: see module doc."""
    for rel, content in GUEST_FILES.items():
        p = rootfs / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink():
            p.unlink()
        p.write_text(content)
    # empty machine-id: each clone generates its own on first boot
    (rootfs / "etc/machine-id").write_text("")
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    systemd_dir = rootfs / "etc/systemd/system"
    for unit in MASKED_UNITS:
        link = systemd_dir / unit
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to("/dev/null")
    _run(["chroot", str(rootfs), "systemctl", "enable", *ENABLED_UNITS])
    # throwaway root key, one per cache entry
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpulab-lab",
          "-f", str(out / "id_ed25519")])
    ssh_dir = rootfs / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text((out / "id_ed25519.pub").read_text())
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    host_keys = [
        " ".join(p.read_text().split()[:2])
        for p in sorted((rootfs / "etc/ssh").glob("ssh_host_*_key.pub"))
    ]
    if not host_keys:
        raise RuntimeError("the image has no SSH host keys (openssh-server postinst failed?)")
    (out / "host_keys.pub").write_text("\n".join(host_keys) + "\n")
    (out / "known_hosts").write_text("".join(f"[127.0.0.1]:* {k}\n" for k in host_keys))
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"), key=lambda p: _kver_key(p.name[8:]))
    if not kernels:
        raise RuntimeError("no kernel in the image's /boot")
    kver = kernels[-1].name[len("vmlinuz-") :]
    headers = rootfs / "usr/src" / f"linux-headers-{kver}"
    if not headers.is_dir():
        raise RuntimeError(f"kernel {kver} has no matching linux-headers in the image")
    shutil.copy2(kernels[-1], out / "vmlinuz")
    shutil.copy2(rootfs / "boot" / f"initrd.img-{kver}", out / "initrd.img")
    return kver


def _kver_key(v: str) -> list[int]:
    return [int(x) for x in v.replace("-", ".").split(".") if x.isdigit()]


def _build(out: Path, log: Log) -> dict[str, object]:
    t0 = time.monotonic()
    mirrors = host_mirrors(SUITE)
    log(f"image: building Debian 12 into {out} from {mirrors.archive} (takes a few minutes)")
    rootfs = out / "rootfs"
    _bootstrap(rootfs, mirrors, EXTRA_CA_DIR, log)
    t_boot = time.monotonic() - t0
    kver = _configure(rootfs, out)
    raw = out / "base.raw"
    _run(["mkfs.ext4", "-q", "-F", "-L", "vmroot", "-d", str(rootfs), str(raw), DISK_SIZE])
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out / "base.qcow2")])
    raw.unlink()
    _run(["tar", "--numeric-owner", "--xattrs", "-cpf", str(out / "rootfs.tar"),
          "-C", str(rootfs), "."])
    shutil.rmtree(rootfs)
    os.chmod(out / "base.qcow2", 0o444)  # overlays only: a write to the base would corrupt them
    total = time.monotonic() - t0
    log(f"image: built in {total:.0f} s (bootstrap {t_boot:.0f} s), kernel {kver}")
    return {
        "recipe": recipe(),
        "mirror": mirrors.archive,
        "kernel_version": kver,
        "build_seconds": round(total, 1),
        "bootstrap_seconds": round(t_boot, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
