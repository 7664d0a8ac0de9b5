"""Text files the fleet writes for its users: pyinfra inventory, ssh_config, known_hosts.

Pure functions, so they are unit-tested without guests. All of them pin the host keys to the
image's keys in a fleet-local known_hosts file: neither pyinfra (paramiko, ``accept-new`` by
default) nor ``ssh`` may touch the user's ``~/.ssh/known_hosts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class GuestAddr:
    """How to reach one guest: its name and the loopback port forwarded to its port 22."""

    name: str
    port: int


def render_known_hosts(guests: Sequence[GuestAddr], host_keys: Sequence[str]) -> str:
    """Exact ``[127.0.0.1]:PORT`` entries (paramiko ignores wildcards) plus the guest names.

    The name entries serve OpenSSH's ``HostKeyAlias`` in :func:`render_ssh_config`.
    """
    lines = []
    for g in guests:
        for key in host_keys:
            lines.append(f"[{LOOPBACK}]:{g.port} {key}")
            lines.append(f"{g.name} {key}")
    return "\n".join(lines) + "\n"


def render_inventory(
    guests: Sequence[GuestAddr], ssh_key: Path, known_hosts: Path, group: str = "lab"
) -> str:
    """A pyinfra inventory: one group ``group`` with per-host SSH data."""
    out = [
        '"""pyinfra inventory of the local lab fleet. Written by gpulab.lab; do not edit."""',
        "",
        f"{group} = [",
    ]
    for g in guests:
        data = {
            "ssh_hostname": LOOPBACK,
            "ssh_port": g.port,
            "ssh_user": "root",
            "ssh_key": str(ssh_key),
            "ssh_known_hosts_file": str(known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "ssh_connect_retries": 2,
        }
        out.append(f"    ({g.name!r}, {data!r}),")
    out.append("]")
    return "\n".join(out) + "\n"


def render_ssh_config(guests: Sequence[GuestAddr], ssh_key: Path, known_hosts: Path) -> str:
    """``ssh -F THIS lab-01`` reaches a guest; testinfra reads it via ``--ssh-config``."""
    blocks = []
    for g in guests:
        blocks.append(
            "\n".join(
                [
                    f"Host {g.name}",
                    f"    HostName {LOOPBACK}",
                    f"    Port {g.port}",
                    "    User root",
                    f"    IdentityFile {ssh_key}",
                    "    IdentitiesOnly yes",
                    f"    HostKeyAlias {g.name}",
                    f"    UserKnownHostsFile {known_hosts}",
                    "    StrictHostKeyChecking yes",
                    "    LogLevel ERROR",
                ]
            )
        )
    return "\n\n".join(blocks) + "\n"
