"""The lab fleet with what only tests do to guests: crash them, save and resume them,
and prove that nothing is left behind."""

from __future__ import annotations

import shlex
import shutil
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpulab.lab.fleet import Fleet, Guest, room_mac
from gpulab.lab.render import LOOPBACK
from tests.phases import timed


def inventory_with(fleet: Fleet, data: Mapping[str, object], path: Path,
                   per_host: Mapping[str, Mapping[str, object]] | None = None) -> Path:
    """The fleet's inventory with ``data`` (and ``per_host[name]``) added to its hosts' data."""
    namespace: dict[str, object] = {}
    exec(fleet.inventory.read_text(), namespace)
    hosts = namespace["lab"]
    assert isinstance(hosts, list)
    rows = [(name, {**host_data, **data, **(per_host or {}).get(name, {})})
            for name, host_data in hosts]
    path.write_text(f"lab = {rows!r}\n")
    return path


def free_udp_port() -> int:
    """A UDP port free on loopback now: a room network's multicast port (``room_port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


# sh: the guest's NIC on the room network (the one with the room MAC prefix)
ROOM_LINK = "$(ip -o link | awk -F': ' '/52:54:00:77/{print $2}')"


def join_room(fleet: Fleet, name: str) -> str:
    """Give a guest of a fleet with a room network its room address, ``10.77.0.<index>/24``,
    on the NIC with its room MAC (systemd-networkd); the address."""
    index = fleet.guests[name].index
    network = (f"[Match]\\nMACAddress={room_mac(index)}\\n[Network]\\n"
               f"Address=10.77.0.{index}/24\\nLinkLocalAddressing=no\\n")
    rc, output = fleet.ssh(name, f"printf '{network}' > /etc/systemd/network/05-room.network "
                           f"&& networkctl reload && sleep 2 && networkctl reconfigure {ROOM_LINK}",
                           timeout=60)
    assert rc == 0, output
    return f"10.77.0.{index}"


def throttle_room_link(fleet: Fleet, name: str, rate: str) -> None:
    """Limit what a guest sends on the room network to ``rate`` (``tc``'s token bucket, e.g.
    ``40mbit``): the room's link, not this machine's CPUs, bounds a transfer."""
    rc, output = fleet.ssh(name, f"tc qdisc replace dev {ROOM_LINK} root tbf rate {rate} "
                           "burst 64kb latency 400ms", timeout=60)
    assert rc == 0, output


def room_bytes_sent(fleet: Fleet, name: str) -> int:
    """The bytes a guest has sent on the room network since it booted (its NIC's counter)."""
    rc, output = fleet.ssh(name, f"cat /sys/class/net/{ROOM_LINK}/statistics/tx_bytes",
                           timeout=60)
    assert rc == 0, output
    return int(output.strip())


# The label of the state every guest is saved in right after its first boot: what a module
# that dirtied a guest hands back.
BOOTED = "booted"


class FleetUnderTest(Fleet):
    """A ``Fleet`` whose guests tests may kill, save and resume.

    A running guest is saved whole (memory and disk, :meth:`save_running`) and brought back
    running (:meth:`resume`) in seconds instead of a ~50 s boot under TCG.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._incoming: dict[str, Path] = {}

    def qemu_argv(self, g: Guest) -> list[str]:
        """Fleet's command line, plus ``-incoming`` when the guest resumes a saved state."""
        argv = super().qemu_argv(g)
        saved = self._incoming.get(g.name)
        if saved is None:
            return argv
        return [*argv, "-incoming", f"exec:cat {shlex.quote(str(saved))}"]

    def memory_path(self, name: str, label: str) -> Path:
        return self.guests[name].dir / f"memory-{label}.state"

    def save_running(self, name: str, label: str = BOOTED, stop: bool = False) -> None:
        """Save a running guest's memory (QEMU's migration to a file) and its overlay under
        ``label``. The guest pauses a few seconds and goes on, or with ``stop`` is gone: its
        QEMU exits as a switched-off machine's would."""
        g = self.guests[name]
        memory = self.memory_path(name, label)
        # QEMU's default migration bandwidth cap (128 MiB/s) only slows a local file down
        self._monitor(g, "migrate_set_parameter max-bandwidth 64G")
        # Live, not paused first: the saved state is then "running", and the resumed guest
        # runs. HMP reads a double-quoted argument; the state dir's paths hold no quote.
        self._monitor(g, f'migrate -d "exec:cat > {shlex.quote(str(memory))}"')
        deadline = time.monotonic() + 120
        while "Migration status: completed" not in (status := self._monitor(g, "info migrate")):
            if "failed" in status or time.monotonic() > deadline:
                raise RuntimeError(f"{name}: saving its memory failed:\n{status}")
            time.sleep(0.2)
        # migration has flushed and released the disk: the overlay is consistent on disk
        shutil.copyfile(g.overlay, g.snapshot_path(label))
        if stop:
            self.stop(name, graceful=False)
        else:
            self._monitor(g, "cont")

    def resume(self, name: str, label: str = BOOTED) -> float:
        """Put a guest back where :meth:`save_running` saved it, running, with its clock set
        to now (a resumed guest's clock goes on from the moment it was saved); seconds taken."""
        t0 = time.monotonic()
        g = self.guests[name]
        self.stop(name, graceful=False)
        shutil.copyfile(g.snapshot_path(label), g.overlay)
        self._incoming[name] = self.memory_path(name, label)
        try:
            self._launch(g)
        finally:
            del self._incoming[name]
        self.write_files()
        # an SSH login tried while QEMU still loads the state waits out its whole timeout
        deadline = time.monotonic() + 120
        while "VM status: running" not in (status := self._monitor(g, "info status")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: not running after loading its saved state:\n"
                                   f"{status}")
            time.sleep(0.1)
        self._wait_all([g], t0, 120)
        rc, output = self.ssh(name, f"date -u -s @{time.time():.3f}", timeout=30)
        if rc != 0:
            raise RuntimeError(f"{name}: setting the clock after resuming failed: {output}")
        return time.monotonic() - t0

    def kill(self, name: str) -> None:
        """SIGKILL a guest's QEMU: the guest vanishes as a crashed or unplugged host would."""
        self.stop(name, graceful=False)

    def hand_back_clean(self, name: str, label: str) -> None:
        """Resume a guest as it was right after its first boot: what a module that dirtied a
        guest does when it ends; timed in the summary under ``label``."""
        with timed(f"{label}: hand {name} back clean (resume the saved boot)"):
            self.resume(name, BOOTED)


    def leftovers(self, ports: dict[str, int] | None = None) -> list[str]:
        """QEMU processes, overlays or forwarded ports still present (empty after ``close``).

        ``ports`` overrides the recorded port per guest (a re-attached fleet may not know it).
        """
        found = []
        for g in self.guests.values():
            pid = g.pid()
            if pid is not None:
                found.append(f"{g.name}: qemu pid {pid}")
            if g.overlay.exists():
                found.append(f"{g.name}: overlay {g.overlay}")
            port = (ports or {}).get(g.name, g.port)
            if port:
                with socket.socket() as s:
                    s.settimeout(1)
                    if s.connect_ex((LOOPBACK, port)) == 0:
                        found.append(f"{g.name}: port {port} still listening")
        needle = str(self.state_dir).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = proc.joinpath("cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"qemu-system") and needle in cmdline:
                found.append(f"qemu process {proc.name} still running")
        return found

