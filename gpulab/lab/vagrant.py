"""Vagrant for the rehearsal: ``gpulab lab box`` and the hosts of ``vagrant ssh-config``.

``gpulab lab box`` turns the lab's cached Debian 12 image (:mod:`gpulab.lab.image`) into the
vagrant-libvirt box ``gpulab/debian12``, for machines that cannot download a box:

- the image's root filesystem, plus a ``vagrant`` user with passwordless sudo and Vagrant's
  well-known insecure public key (Vagrant swaps it for a key of its own on the first ``up``),
  and DNS at the gateway of vagrant-libvirt's management network;
- written as ``box.img`` (qcow2 of a bare ext4 filesystem, no bootloader), so the box's own
  Vagrantfile has libvirt boot the image's kernel and initrd directly (``/dev/vda`` is root);
- packed once per image and version of this file into
  ``<cache>/boxes/<image>-<hash>/gpulab-debian12.box``, then ``vagrant box add --force``.

:func:`parse_ssh_config` and :func:`vagrant_hosts` turn ``vagrant ssh-config`` into pyinfra
host data (``inventories/vagrant.py``), so pyinfra and ``gpulab verify`` reach the same guests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gpulab.inventory import InventoryError
from gpulab.lab.fleet import GUEST_KERNEL_CMDLINE
from gpulab.lab.image import DISK_SIZE, ImagePaths, cache_root, ensure_image, fresh_rootfs

BOX_NAME = "gpulab/debian12"
BOX_FILE = "gpulab-debian12.box"
# Vagrant's published insecure key (keys/vagrant.pub in Vagrant's source): every box ships it.
VAGRANT_INSECURE_PUBKEY = (
    "ssh-rsa "
    "AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHz"
    "D8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSI"
    "Fo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmC"
    "P3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRd"
    "K8jlqm8tehUc9c9WhQ=="
    " vagrant insecure public key"
)
# vagrant-libvirt's management network (192.168.121.0/24) answers DNS at its gateway
MANAGEMENT_GATEWAY = "192.168.121.1"
BOX_RESOLV_CONF = f"nameserver {MANAGEMENT_GATEWAY}\n"
BOX_VAGRANTFILE = f"""\
# The box {BOX_NAME}, written by `gpulab lab box`. Its disk is a bare ext4 filesystem with no
# bootloader: libvirt boots the image's kernel and initrd, shipped beside it, directly.
Vagrant.configure("2") do |config|
  config.vm.provider "libvirt" do |libvirt|
    libvirt.kernel = File.expand_path("vmlinuz", __dir__)
    libvirt.initrd = File.expand_path("initrd.img", __dir__)
    libvirt.cmd_line = "{GUEST_KERNEL_CMDLINE}"
  end
end
"""

Log = Callable[[str], None]


def box_metadata(virtual_size_bytes: int) -> dict[str, object]:
    """vagrant-libvirt's ``metadata.json``: a qcow2 disk, its size in whole GiB (rounded up)."""
    gib = -(-virtual_size_bytes // (1 << 30))
    return {"provider": "libvirt", "format": "qcow2", "virtual_size": gib}


def parse_ssh_config(text: str) -> list[tuple[str, dict[str, object]]]:
    """``vagrant ssh-config`` output → ``[(machine, pyinfra SSH host data)]``, in order.

    Vagrant's own settings are kept: host, port, user and the machine's private key. Its
    ``StrictHostKeyChecking no`` / ``UserKnownHostsFile /dev/null`` become pyinfra's
    ``ssh_strict_host_key_checking: "no"`` and ``ssh_known_hosts_file: "/dev/null"``: every
    ``vagrant up`` makes new guests under old addresses, and the user's known_hosts stays
    untouched.
    """
    hosts: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        key, _, value = raw.strip().partition(" ")
        value = value.strip().strip('"')
        if key == "Host":
            hosts.append((value, {}))
        elif hosts and key:
            hosts[-1][1].setdefault(key.lower(), value)  # OpenSSH: the first value wins
    result: list[tuple[str, dict[str, object]]] = []
    for name, options in hosts:
        missing = [k for k in ("hostname", "user", "identityfile") if k not in options]
        if missing:
            raise ValueError(f"vagrant ssh-config: {name} has no {', '.join(missing)}")
        result.append((name, {
            "ssh_hostname": options["hostname"],
            "ssh_port": int(options.get("port", "22")),
            "ssh_user": options["user"],
            "ssh_key": options["identityfile"],
            "ssh_strict_host_key_checking": "no",
            "ssh_known_hosts_file": "/dev/null",
            "_sudo": options["user"] != "root",
        }))
    return result


def vagrant_hosts(project: Path) -> list[tuple[str, dict[str, object]]]:
    """The running machines of the Vagrantfile in ``project``, as pyinfra hosts.

    Raises ``InventoryError`` with what to do when Vagrant is missing or a machine is not
    running (``vagrant ssh-config`` then fails as a whole).
    """
    if shutil.which("vagrant") is None:
        raise InventoryError("vagrant is not installed: `make setup` installs it (Debian/Ubuntu)")
    done = subprocess.run(["vagrant", "ssh-config"], cwd=project, capture_output=True,
                          text=True, check=False)
    hosts = parse_ssh_config(done.stdout) if done.returncode == 0 else []
    if not hosts:
        said = " ".join(done.stderr.split())
        raise InventoryError(f"no running Vagrant machine in {project}: `vagrant up` first"
                             + (f" (vagrant ssh-config: {said})" if said else ""))
    return hosts


def _run(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def _add_vagrant_user(rootfs: Path) -> None:
    """The ``vagrant`` user every box has: passwordless sudo, the insecure key."""
    _run(["chroot", str(rootfs), "useradd", "--create-home", "--shell", "/bin/bash",
          "--user-group", "vagrant"])
    sudoers = rootfs / "etc/sudoers.d/vagrant"
    sudoers.write_text("vagrant ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    ssh_dir = rootfs / "home/vagrant/.ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text(VAGRANT_INSECURE_PUBKEY + "\n")
    (ssh_dir / "authorized_keys").chmod(0o600)
    _run(["chroot", str(rootfs), "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"])
    resolv = rootfs / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text(BOX_RESOLV_CONF)


def _virtual_size(qcow2: Path) -> int:
    info = subprocess.run(["qemu-img", "info", "--output=json", str(qcow2)],
                          capture_output=True, text=True, check=True)
    return int(json.loads(info.stdout)["virtual-size"])


def build_box(image: ImagePaths, out: Path, log: Log = print) -> Path:
    """The ``.box`` file for ``image`` (cached in ``out``); built on first use (root only)."""
    box_file = out / BOX_FILE
    if box_file.is_file():
        log(f"box: cache hit {box_file}")
        return box_file
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".box-", dir=out) as tmp:
        work = Path(tmp)
        rootfs = fresh_rootfs(work / "rootfs", image)
        _add_vagrant_user(rootfs)
        box = work / "box"
        box.mkdir()
        raw = work / "disk.raw"
        _run(["mkfs.ext4", "-q", "-F", "-L", "vmroot", "-d", str(rootfs), str(raw), DISK_SIZE])
        _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(box / "box.img")])
        shutil.copy2(image.kernel, box / "vmlinuz")
        shutil.copy2(image.initrd, box / "initrd.img")
        metadata = box_metadata(_virtual_size(box / "box.img"))
        (box / "metadata.json").write_text(json.dumps(metadata) + "\n")
        (box / "Vagrantfile").write_text(BOX_VAGRANTFILE)
        partial = work / BOX_FILE
        _run(["tar", "-cf", str(partial), "-C", str(box), "."])
        os.replace(partial, box_file)
    log(f"box: built {box_file} in {time.monotonic() - t0:.0f} s")
    return box_file


def cmd_box(args: argparse.Namespace) -> int:
    """``gpulab lab box``: build (or reuse) the box and ``vagrant box add`` it."""
    if shutil.which("vagrant") is None:
        print("gpulab lab box: vagrant is not installed: `make setup` installs it",
              file=sys.stderr)
        return 1
    image = ensure_image(log=lambda m: print(m, file=sys.stderr))
    # this file (user, key, files) and the kernel command line the box's Vagrantfile names
    recipe = hashlib.sha256(Path(__file__).read_bytes()
                            + GUEST_KERNEL_CMDLINE.encode()).hexdigest()[:12]
    box_file = build_box(image, cache_root() / "boxes" / f"{image.dir.name}-{recipe}",
                         log=lambda m: print(m, file=sys.stderr))
    _run(["vagrant", "box", "add", "--force", "--name", args.name, str(box_file)])
    print(f"box {args.name} added: `vagrant up --provider libvirt` (see the Vagrantfile)")
    return 0


def add_box_parser(lab: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``lab box`` on the lab CLI's subparsers."""
    box = lab.add_parser("box", help=f"the lab's Debian 12 image as the Vagrant box {BOX_NAME}"
                                     " (vagrant-libvirt)")
    box.add_argument("--name", default=BOX_NAME, help=f"box name (default {BOX_NAME})")
    box.set_defaults(func=cmd_box)
