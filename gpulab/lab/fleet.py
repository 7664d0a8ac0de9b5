"""Boot N Debian 12 guests from the cached image and tear them down again, always.

Each guest is a copy-on-write qcow2 overlay of the read-only base image (backing path absolute:
a relative one is resolved from the overlay's folder and fails), booted with the image's kernel
directly, with user-mode networking. Consequences worth knowing:

- SSH is forwarded from a free ``127.0.0.1`` port only; nothing listens beyond loopback.
- Inside a guest, ``10.0.2.2`` is the host: fixtures serving on the host's ``127.0.0.1:PORT``
  are reached from guests as ``http://10.0.2.2:PORT``. ``10.0.2.3`` is QEMU's DNS forwarder.
- Readiness is a real SSH login with the image's pinned host keys; the forwarded port accepts TCP
  before the guest kernel even runs.
- The guest's hostname comes from the kernel command line (``systemd.hostname=``) and its
  machine-id is generated on first boot (the image's is empty), so clones differ.
- With direct kernel boot a kernel upgraded inside a guest never boots; keep the image's.

Two lifetimes: ``daemonize=False`` (tests) starts QEMU as children that die with this process
(``PR_SET_PDEATHSIG``), and the context manager, ``atexit`` and SIGTERM/SIGHUP handlers stop
them; ``daemonize=True`` (``gpulab lab up``) leaves them running, recorded in ``fleet.json``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

from gpulab.lab.accel import Accel, detect_accel
from gpulab.lab.image import ImagePaths, cached_image, ensure_image
from gpulab.lab.render import (
    LOOPBACK,
    GuestAddr,
    render_inventory,
    render_known_hosts,
    render_ssh_config,
)
from gpulab.lab.ssh import GuestSsh

Log = Callable[[str], None]
STATE_FILE = "fleet.json"
HOST_FROM_GUEST = "10.0.2.2"  # user-mode networking: the host's loopback, seen from a guest
# The guests' kernel command line (direct kernel boot). The guests are throw-away test and
# rehearsal machines; without KVM, the CPU-vulnerability mitigations' barriers and TLB flushes
# are emulated, and turning them off made a guest's process starts ~22 % and Python and dpkg
# ~26-30 % faster under TCG (measured on this project's 2-core machines).
GUEST_KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 quiet mitigations=off"


def free_port() -> int:
    """A currently free TCP port on loopback (QEMU binds it a moment later; see retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child is dead for our purposes
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _set_pdeathsig() -> None:
    """Runs in the QEMU child: die with the parent, even if the parent is SIGKILLed."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


ROOM_GROUP = "230.0.0.1"
MONITOR_PROMPT = b"(qemu) "


def room_mac(index: int) -> str:
    """The MAC address of guest ``index``'s room NIC.

    >>> room_mac(3)
    '52:54:00:77:00:03'
    """
    return f"52:54:00:77:00:{index:02x}"


@dataclass
class Guest:
    """One guest's files and process. ``dir`` holds overlay, pidfile, monitor socket, logs."""

    name: str
    index: int
    dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    boot_seconds: float = 0.0

    @property
    def overlay(self) -> Path:
        return self.dir / "overlay.qcow2"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def monitor(self) -> Path:
        return self.dir / "monitor.sock"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.dir / "qemu.log"

    def snapshot_path(self, label: str) -> Path:
        return self.dir / f"snapshot-{label}.qcow2"

    def pid(self) -> int | None:
        """The QEMU pid if that process is alive and really ours (pid files outlive reboots)."""
        if self.proc is not None:
            return self.proc.pid if self.proc.poll() is None else None
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if str(self.overlay).encode() not in cmdline or not _pid_alive(pid):
            return None
        return pid

    @property
    def addr(self) -> GuestAddr:
        return GuestAddr(self.name, self.port)


class Fleet:
    """N guests under ``state_dir``; use as a context manager (tests) or via the lab CLI."""

    def __init__(
        self,
        state_dir: Path,
        hosts: int = 2,
        vcpus: int = 1,
        memory_mib: int = 1024,
        tb_size_mib: int = 256,
        image: ImagePaths | None = None,
        daemonize: bool = False,
        accel: Accel | None = None,
        log: Log = print,
        prefix: str = "lab",
        room_port: int | None = None,
    ) -> None:
        self.state_dir = state_dir.resolve()
        # A second NIC per guest on one Ethernet segment, the room, carried as UDP multicast
        # on this machine's loopback: guests reach each other there, this namespace holds no
        # room address. None: user-mode networking only.
        self.room_port = room_port
        self.vcpus = vcpus
        self.memory_mib = memory_mib
        self.tb_size_mib = tb_size_mib
        self.daemonize = daemonize
        self.log = log
        self._image = image
        self.accel = accel or detect_accel()
        self.guests: dict[str, Guest] = {}
        for i in range(1, hosts + 1):
            name = f"{prefix}-{i:02d}"
            self.guests[name] = Guest(name, i, self.state_dir / "guests" / name)
        self._closed = False
        self._old_handlers: dict[int, object] = {}
        self._lock = threading.Lock()
        self._ssh: GuestSsh | None = None

    # ----- SSH -----------------------------------------------------------------------------
    @property
    def ssh_client(self) -> GuestSsh:
        if self._ssh is None:
            self._ssh = GuestSsh(self.ssh_key, self.image.host_keys)
        return self._ssh

    def ssh(self, name: str, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run ``command`` as root on a guest; (exit status, stdout+stderr)."""
        return self.ssh_client.run(self.guests[name].port, command, timeout)

    def ssh_ready(self, name: str, timeout: float = 5) -> bool:
        """A real login and command: the only proof a guest is ready."""
        return self.ssh_client.ready(self.guests[name].port, timeout)

    # ----- files for users -------------------------------------------------------------
    @property
    def image(self) -> ImagePaths:
        if self._image is None:
            self._image = ensure_image(log=self.log)
        return self._image

    @property
    def inventory(self) -> Path:
        return self.state_dir / "inventory.py"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def ssh_key(self) -> Path:
        return self.image.ssh_key

    def write_files(self) -> None:
        """(Re)write inventory, ssh_config, known_hosts and fleet.json from current ports."""
        addrs = [g.addr for g in self.guests.values()]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.known_hosts.write_text(render_known_hosts(addrs, self.ssh_client.host_keys()))
        self.inventory.write_text(render_inventory(addrs, self.ssh_key, self.known_hosts))
        self.ssh_config.write_text(render_ssh_config(addrs, self.ssh_key, self.known_hosts))
        state = {
            "accel": self.accel.name,
            "accel_reason": self.accel.reason,
            "image": str(self.image.dir),
            "vcpus": self.vcpus,
            "memory_mib": self.memory_mib,
            "tb_size_mib": self.tb_size_mib,
            "daemonize": self.daemonize,
            "guests": [{"name": g.name, "port": g.port} for g in self.guests.values()],
        }
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path, log: Log = print) -> Fleet:
        """Re-attach to a fleet started earlier (``gpulab lab status|down``)."""
        state = json.loads((state_dir / STATE_FILE).read_text())
        image_dir = Path(state["image"])
        fleet = cls(
            state_dir,
            hosts=len(state["guests"]),
            vcpus=state["vcpus"],
            memory_mib=state["memory_mib"],
            tb_size_mib=state["tb_size_mib"],
            image=cached_image(image_dir),  # same cache entry, no rebuild check
            daemonize=state["daemonize"],
            accel=Accel(state["accel"], state.get("accel_reason", "")),
            log=log,
        )
        for g in state["guests"]:
            fleet.guests[g["name"]].port = int(g["port"])
        return fleet

    # ----- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Fleet:
        self.install_cleanup()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def install_cleanup(self) -> None:
        """atexit + SIGTERM/SIGHUP → SystemExit, so ``with`` blocks and finalizers unwind.

        SIGINT already raises KeyboardInterrupt. Handlers are only installable from the main
        thread; elsewhere atexit and PDEATHSIG still apply.
        """
        atexit.register(self.close)
        if threading.current_thread() is not threading.main_thread():
            return

        def _raise(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, _raise)

    def up(self, timeout: float = 600) -> dict[str, float]:
        """Create fresh overlays, boot every guest in parallel, wait for SSH; boot seconds."""
        self.log(f"fleet: {len(self.guests)} guests, accel {self.accel.name} "
                 f"({self.accel.reason}), {self.vcpus} vCPU, {self.memory_mib} MiB each")
        image = self.image
        for g in self.guests.values():
            self._fresh_overlay(g, image)
        t0 = time.monotonic()
        for g in self.guests.values():
            self._launch(g)
        self.write_files()
        self._wait_all(self.guests.values(), t0, timeout)
        self.log("fleet: ready: " + ", ".join(
            f"{g.name}@{LOOPBACK}:{g.port} {g.boot_seconds:.0f}s" for g in self.guests.values()))
        return {g.name: g.boot_seconds for g in self.guests.values()}

    def start(self, name: str, timeout: float = 600) -> float:
        """Boot one stopped guest (its overlay as it is) and wait for SSH; boot seconds."""
        g = self.guests[name]
        if g.pid() is not None:
            raise RuntimeError(f"{name} is already running")
        if not g.overlay.exists():
            self._fresh_overlay(g, self.image)
        t0 = time.monotonic()
        self._launch(g)
        self.write_files()
        self._wait_all([g], t0, timeout)
        return g.boot_seconds

    def stop(self, name: str, graceful: bool = True) -> None:
        """Power a guest off: ``systemctl poweroff`` over SSH, then the monitor's
        ``system_powerdown``, then SIGTERM and SIGKILL by pid. ``graceful=False`` kills at
        once (a host failing mid-run)."""
        g = self.guests[name]
        pid = g.pid()
        if pid is None:
            self._reap(g)
            return
        if graceful:
            try:
                self.ssh(name, "systemctl --no-block poweroff", timeout=10)
                sent = True
            except Exception:
                sent = False  # still booting, or SSH is broken: go on to ACPI
            if sent and self._wait_exit(g, 45):
                return
            with contextlib.suppress(OSError):
                self._monitor(g, "system_powerdown", timeout=5)
            if self._wait_exit(g, 20):
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if self._wait_exit(g, 10):
                return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait_exit(g, 10)

    def close(self, remove: bool = True) -> None:
        """Stop every guest (in parallel) and remove overlays and runtime files. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        running = [g.name for g in self.guests.values() if g.pid() is not None]
        if running:
            self.log(f"fleet: stopping {', '.join(running)}")
            with ThreadPoolExecutor(max_workers=len(running)) as pool:
                list(pool.map(self.stop, running))
        for g in self.guests.values():
            self._reap(g)
        if remove:
            shutil.rmtree(self.state_dir / "guests", ignore_errors=True)
            for p in (self.inventory, self.ssh_config, self.known_hosts,
                      self.state_dir / STATE_FILE):
                p.unlink(missing_ok=True)
        self.detach()

    def detach(self) -> None:
        """Drop the atexit/signal cleanup: the guests outlive this process (``lab up``)."""
        for sig, handler in self._old_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old_handlers.clear()
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    def status(self) -> dict[str, object]:
        """What ``gpulab lab status --json`` prints."""
        guests = []
        for g in self.guests.values():
            if g.pid() is None:
                state = "stopped"
            else:
                state = "ready" if self.ssh_ready(g.name, timeout=3) else "booting"
            guests.append({"name": g.name, "port": g.port, "state": state})
        return {
            "guests": guests,
            "inventory": str(self.inventory),
            "ssh_config": str(self.ssh_config),
            "accel": self.accel.name,
        }

    # ----- internals -----------------------------------------------------------------------
    def _fresh_overlay(self, g: Guest, image: ImagePaths) -> None:
        g.dir.mkdir(parents=True, exist_ok=True)
        g.overlay.unlink(missing_ok=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
             "-b", str(image.qcow2.resolve()), str(g.overlay)],
            check=True,
        )

    def qemu_argv(self, g: Guest) -> list[str]:
        """The QEMU command line for one guest (printed in ``qemu.log`` for debugging)."""
        img = self.image
        if self.accel.name == "kvm":
            accel = ["-accel", "kvm", "-cpu", "host"]
        else:
            accel = ["-accel", f"tcg,tb-size={self.tb_size_mib}", "-cpu", "max"]
        append = f"{GUEST_KERNEL_CMDLINE} systemd.hostname={g.name}"
        argv = [
            "qemu-system-x86_64", *accel,
            "-name", g.name,
            "-m", str(self.memory_mib), "-smp", str(self.vcpus),
            "-kernel", str(img.kernel), "-initrd", str(img.initrd), "-append", append,
            "-drive", f"file={g.overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
            "-netdev", f"user,id=n0,hostfwd=tcp:{LOOPBACK}:{g.port}-:22",
            "-device", "virtio-net-pci,netdev=n0",
            *self._room_nic(g),
            "-device", "virtio-rng-pci",
            "-display", "none", "-vga", "none", "-nodefaults",
            "-serial", f"file:{g.console}",
            "-monitor", f"unix:{g.monitor},server,nowait",
            "-pidfile", str(g.pidfile),
        ]
        if self.daemonize:
            argv.append("-daemonize")
        return argv

    def _room_nic(self, g: Guest) -> list[str]:
        if self.room_port is None:
            return []
        return ["-netdev", f"socket,id=room,mcast={ROOM_GROUP}:{self.room_port},"
                f"localaddr={LOOPBACK}",
                "-device", f"virtio-net-pci,netdev=room,mac={room_mac(g.index)}"]

    def _launch(self, g: Guest, attempts: int = 5) -> None:
        """Start QEMU on a free port; retry with another port if it lost the race for it.

        Must run in the main thread: PDEATHSIG fires when the *thread* that forked exits.
        """
        if len(str(g.monitor)) > 100:
            raise RuntimeError(f"state dir path too long for a unix socket: {g.monitor}")
        for _ in range(attempts):
            g.port = free_port()
            g.pidfile.unlink(missing_ok=True)
            g.monitor.unlink(missing_ok=True)
            g.console.unlink(missing_ok=True)
            argv = self.qemu_argv(g)
            with g.qemu_log.open("wb") as logf:
                logf.write((" ".join(argv) + "\n").encode())
                logf.flush()
                if self.daemonize:
                    rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                        stderr=logf, check=False).returncode
                    if rc == 0:
                        return
                else:
                    g.proc = subprocess.Popen(
                        argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                        preexec_fn=_set_pdeathsig, start_new_session=True,
                    )
                    if self._wait_listening(g, 20):
                        return
            err = g.qemu_log.read_text(errors="replace")
            self._reap(g)
            if "hostfwd" not in err and "forwarding" not in err:
                raise RuntimeError(f"QEMU for {g.name} failed:\n{err[-2000:]}")
        raise RuntimeError(f"QEMU for {g.name}: no free port after {attempts} attempts")

    def _wait_listening(self, g: Guest, timeout: float) -> bool:
        """True once QEMU listens on the forwarded port; False if it exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if g.proc is not None and g.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(
                (LOOPBACK, g.port), timeout=1
            ):
                return True
            time.sleep(0.1)
        return g.proc is not None and g.proc.poll() is None

    def _wait_all(self, guests: Iterable[Guest], t0: float, timeout: float) -> None:
        gs = list(guests)

        abort = threading.Event()

        def wait(g: Guest) -> None:
            deadline = t0 + timeout
            while time.monotonic() < deadline and not abort.is_set():
                if g.pid() is None:
                    raise RuntimeError(
                        f"{g.name}: QEMU exited during boot; see {g.qemu_log} and {g.console}"
                    )
                if self.ssh_ready(g.name, timeout=10):
                    g.boot_seconds = time.monotonic() - t0
                    return
                abort.wait(1)
            raise TimeoutError(f"{g.name}: no SSH login after {timeout:.0f} s; see {g.console}")

        pool = ThreadPoolExecutor(max_workers=len(gs))
        try:
            for f in [pool.submit(wait, g) for g in gs]:
                f.result()
        finally:
            # Ctrl-C/SIGTERM land here in the main thread: stop the pollers so teardown
            # does not wait for guests that are being killed anyway
            abort.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _wait_exit(self, g: Guest, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if g.pid() is None:
                self._reap(g)
                return True
            time.sleep(0.2)
        return False

    def _reap(self, g: Guest) -> None:
        if g.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                g.proc.wait(timeout=5)
            if g.proc.poll() is not None:
                g.proc = None
        if g.pid() is None:
            g.pidfile.unlink(missing_ok=True)
            g.monitor.unlink(missing_ok=True)

    def _monitor(self, g: Guest, command: str, timeout: float = 60) -> str:
        """One QEMU monitor (HMP) command; its reply, up to the next prompt (empty when QEMU
        exits on it)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(g.monitor))
            _until_prompt(s)  # the banner
            s.sendall(command.encode() + b"\n")
            return _until_prompt(s)


def _until_prompt(s: socket.socket) -> str:
    """What QEMU's monitor sends up to its next prompt (or until it closes)."""
    reply = b""
    while not reply.endswith(MONITOR_PROMPT):
        chunk = s.recv(65536)
        if not chunk:
            break
        reply += chunk
    return reply.decode(errors="replace")
