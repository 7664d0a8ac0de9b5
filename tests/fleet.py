"""The lab fleet with what only tests do to guests: crash them, snapshot and restore them,
and prove that nothing is left behind."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Mapping
from pathlib import Path

from gpulab.lab.fleet import Fleet, room_mac
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


class FleetUnderTest(Fleet):
    """A ``Fleet`` whose guests tests may kill, snapshot and restore."""

    def kill(self, name: str) -> None:
        """SIGKILL a guest's QEMU: the guest vanishes as a crashed or unplugged host would."""
        self.stop(name, graceful=False)

    def snapshot(self, name: str, label: str = "clean") -> Path:
        """Copy a stopped guest's overlay aside (cheap: only its changes over the base)."""
        g = self.guests[name]
        self._require_stopped(g)
        dst = g.snapshot_path(label)
        shutil.copyfile(g.overlay, dst)
        return dst

    def restore(self, name: str, label: str = "clean") -> None:
        """Put a stopped guest's overlay back to a snapshot taken with :meth:`snapshot`."""
        g = self.guests[name]
        self._require_stopped(g)
        shutil.copyfile(g.snapshot_path(label), g.overlay)

    def hand_back_clean(self, name: str, label: str) -> None:
        """Give a guest a fresh overlay and boot it: what a module that dirtied the suite's
        scratch guest does when it ends; timed in the summary under ``label``."""
        with timed(f"{label}: hand {name} back clean (reset + boot)"):
            self.stop(name)
            self.reset(name)
            self.start(name)


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
