"""From pyinfra inventory data to a testinfra host: the same user, port, key and known hosts.

pytest-testinfra has no pyinfra backend; its OpenSSH backend (``ssh://``) reads an
``ssh_config``, so each host's pyinfra SSH data is written as one ``Host`` block. OpenSSH (not
paramiko, which accepts unknown host keys with a warning) honours ``UserKnownHostsFile`` and
``StrictHostKeyChecking`` exactly as the deploy did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# pyinfra's defaults for the same keys (pyinfra.connectors.ssh)
DEFAULT_STRICT_HOST_KEY_CHECKING = "accept-new"


class ConnectionDataError(ValueError):
    """Inventory data that testinfra cannot connect with."""


@dataclass(frozen=True)
class Target:
    """One inventory host as testinfra reaches it."""

    name: str
    hostspec: str  # ssh://name, local://
    sudo: bool
    sudo_user: str | None
    recorded_facts: str | None  # a ``gpulab facts`` file the plan is made from instead


def _ssh_value(value: object) -> str:
    text = str(value)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def ssh_config_block(name: str, data: Mapping[str, Any], control_dir: Path) -> str:
    """The ``Host`` block for one pyinfra host, from its ``ssh_*`` data.

    Example::

        >>> print(ssh_config_block("lab-01", {"ssh_hostname": "10.0.0.11", "ssh_user": "root",
        ...       "ssh_port": 2222}, Path("/run/v")))  # doctest: +NORMALIZE_WHITESPACE
        Host lab-01
            HostName 10.0.0.11
            Port 2222
            User root
            StrictHostKeyChecking accept-new
            BatchMode yes
            ControlPath /run/v/%C
        <BLANKLINE>
    """
    if data.get("ssh_password"):
        raise ConnectionDataError(
            f"{name}: ssh_password: gpulab verify logs in with keys only (OpenSSH BatchMode); "
            "use ssh_key, or an ssh-agent"
        )
    lines = [f"Host {name}", f"    HostName {data.get('ssh_hostname') or name}"]
    if data.get("ssh_port"):
        lines.append(f"    Port {int(data['ssh_port'])}")
    if data.get("ssh_user"):
        lines.append(f"    User {data['ssh_user']}")
    if data.get("ssh_key"):
        lines.append(f"    IdentityFile {_ssh_value(Path(str(data['ssh_key'])).expanduser())}")
        lines.append("    IdentitiesOnly yes")
    if data.get("ssh_known_hosts_file"):
        known = Path(str(data["ssh_known_hosts_file"])).expanduser()
        lines.append(f"    UserKnownHostsFile {_ssh_value(known)}")
    strict = data.get("ssh_strict_host_key_checking", DEFAULT_STRICT_HOST_KEY_CHECKING)
    lines.append(f"    StrictHostKeyChecking {strict}")
    lines += ["    BatchMode yes", f"    ControlPath {control_dir}/%C"]
    text = "\n".join(lines) + "\n"
    if data.get("ssh_config_file"):
        # after our block: OpenSSH keeps the first value, and the inventory's data wins
        included = Path(str(data["ssh_config_file"])).expanduser()
        text += f"\nMatch all\n    Include {_ssh_value(included)}\n"
    return text


def target_for(name: str, data: Mapping[str, Any], recorded_key: str) -> Target:
    """How testinfra reaches a pyinfra host: ``@local`` locally, anything else over SSH."""
    if name.startswith("@") and name != "@local":
        connector = name.split("/", 1)[0]
        raise ConnectionDataError(
            f"{name}: gpulab verify checks real hosts over SSH (or @local); pyinfra's "
            f"{connector} connector has no live state to verify"
        )
    recorded = data.get(recorded_key)
    return Target(
        name=name,
        hostspec="local://" if name == "@local" else f"ssh://{name}",
        sudo=bool(data.get("_sudo")),
        sudo_user=data.get("_sudo_user"),
        recorded_facts=str(recorded) if recorded else None,
    )
