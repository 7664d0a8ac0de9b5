"""A libvirtd of the test's own, inside a network namespace the test makes.

Nothing of this machine's libvirt is used or touched: ``ip netns exec`` gives libvirtd a mount
namespace of its own too, where the test's folders are bound over ``/etc/libvirt``,
``/run/libvirt``, ``/var/lib/libvirt``, ``/var/cache/libvirt`` and ``/var/log/libvirt``. Its
networks (bridge, dnsmasq, NAT rules) and so its guests' addresses exist only in the namespace;
clients reach it through ``uri`` (a socket in the test's folder).

The private ``qemu.conf``, and why:

- ``namespaces = []``, and ``/dev/kvm`` hidden (an empty file bound over it): on a machine
  whose ``/dev/kvm`` is ``kvm_pvm`` (see ``gpulab.lab.accel``) each QEMU start took ~52 s
  without them when this test was first written. Guests use TCG (domain type ``qemu``)
  anyway: a stock kernel does not boot on ``kvm_pvm``.
- ``user``/``group`` root: the box's kernel and initrd (direct boot) live under the test's
  ``VAGRANT_HOME``, which the usual ``libvirt-qemu`` user cannot read.
- ``security_driver = "none"``, ``cgroup_controllers = []``: no AppArmor profiles or systemd
  cgroups for a daemon that is not the system's.
- ``stdio_handler = "file"``: no virtlogd needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from gpulab.lab.fleet import _set_pdeathsig
from tests.netns import add_netns, delete_netns

BOUND = ("/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt",
         "/var/log/libvirt")
QEMU_CONF = """
user = "root"
group = "root"
namespaces = []
security_driver = "none"
cgroup_controllers = []
stdio_handler = "file"
"""
TOOLS = ("ip", "libvirtd", "virsh", "qemu-system-x86_64", "dnsmasq", "iptables", "vagrant")


class LibvirtUnavailable(RuntimeError):
    """libvirtd did not come up in the namespace; the message carries its own words."""


def missing_tools() -> list[str]:
    """Why a private libvirtd cannot run here (empty when it can be tried)."""
    why = [f"{tool} not installed" for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        why.append("not root (network namespaces, bind mounts and libvirtd need it)")
    if shutil.which("vagrant"):
        plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True,
                                 check=False).stdout
        if "vagrant-libvirt" not in plugins:
            why.append("the vagrant-libvirt plugin is not installed")
    return why


class PrivateLibvirt:
    """``with PrivateLibvirt(folder, "gl-xyz") as libvirt:`` → ``libvirt.uri``, ``.run()``."""

    def __init__(self, folder: Path, netns: str) -> None:
        self.folder = folder
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "libvirtd.log"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.folder}/sock/libvirt-sock"

    def _private_dir(self, system_dir: str) -> Path:
        return self.folder / system_dir.strip("/").replace("/", "-")

    def _write_config(self) -> None:
        for system_dir in BOUND:
            self._private_dir(system_dir).mkdir(parents=True, exist_ok=True)
        etc = self._private_dir("/etc/libvirt")
        shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True, symlinks=True)
        for autostart in (etc / "qemu/networks/autostart").glob("*"):
            autostart.unlink()  # the system's default network: not ours to start
        (self._private_dir("/var/log/libvirt") / "qemu").mkdir(exist_ok=True)
        with (etc / "qemu.conf").open("a") as conf:
            conf.write(QEMU_CONF)
        (self.folder / "sock").mkdir(exist_ok=True)
        with (etc / "libvirtd.conf").open("a") as conf:
            conf.write(f'\nunix_sock_dir = "{self.folder}/sock"\n'
                       'auth_unix_rw = "none"\nauth_unix_ro = "none"\n')
        (self.folder / "no-kvm").touch()

    def start(self, timeout: float = 120) -> None:
        """Namespace, folders, libvirtd; returns once it answers (it probes QEMU first)."""
        self._write_config()
        add_netns(self.netns)
        mounts = [f"mount --bind {self._private_dir(d)} {d}" for d in BOUND]
        if os.path.exists("/dev/kvm"):
            mounts.append(f"mount --bind {self.folder}/no-kvm /dev/kvm")
        script = " && ".join(["mkdir -p /run/libvirt", *mounts,
                              f"exec libvirtd --pid-file {self.folder}/libvirtd.pid"])
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "sh", "-c", script],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_set_pdeathsig,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LibvirtUnavailable(f"libvirtd exited with {self.proc.returncode}:\n"
                                         + self.log.read_text(errors="replace")[-3000:])
            answer = subprocess.run(["virsh", "-c", self.uri, "version"], capture_output=True,
                                    text=True, check=False, timeout=timeout)
            if answer.returncode == 0 and "Running hypervisor: QEMU" in answer.stdout:
                return
            time.sleep(0.5)
        raise LibvirtUnavailable(f"libvirtd did not answer `virsh version` in {timeout:.0f} s:\n"
                                 + self.log.read_text(errors="replace")[-3000:])

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
            timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the namespace (its mounts are this machine's), never raising."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True,
                              text=True, timeout=timeout, check=False, cwd=cwd,
                              env={**os.environ, **(env or {})})

    def leftover_pids(self) -> list[int]:
        """Processes libvirtd started (QEMU, dnsmasq) that are still alive, by their pid files."""
        pids = []
        for pidfile in self._private_dir("/run/libvirt").rglob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().split()[0])
                if Path(f"/proc/{pid}").exists():
                    pids.append(pid)
        return pids

    def stop(self) -> None:
        """libvirtd, then whatever it left running, then the namespace. Idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        delete_netns(self.netns)

    def __enter__(self) -> PrivateLibvirt:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
