"""The one SSH client that reaches lab guests: paramiko, the image's key and host keys.

Guests listen on ``127.0.0.1:PORT`` only. Every connection checks the guest's host key against
the image's keys, so a port reused by something else is never trusted.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import paramiko

from gpulab.lab.render import LOOPBACK

# Readiness polling fails many times per boot by design; keep paramiko's tracebacks quiet.
_SSH_LOG = logging.getLogger("gpulab.lab.ssh")
_SSH_LOG.propagate = False
_SSH_LOG.addHandler(logging.NullHandler())


class GuestSsh:
    """Run commands as root on guests of one image.

    .. code:: python

        client = GuestSsh(image.ssh_key, image.host_keys)
        rc, output = client.run(2222, "hostname")
    """

    def __init__(self, key_file: Path, host_keys_file: Path) -> None:
        self.key_file = key_file
        self.host_keys_file = host_keys_file
        self._key: paramiko.PKey | None = None

    def host_keys(self) -> list[str]:
        """The image's public host keys, ``type base64`` per line."""
        return [ln for ln in self.host_keys_file.read_text().splitlines() if ln.strip()]

    def _pkey(self) -> paramiko.PKey:
        if self._key is None:
            self._key = paramiko.Ed25519Key.from_private_key_file(str(self.key_file))
        return self._key

    def _transport(self, port: int, timeout: float) -> paramiko.Transport:
        """An authenticated SSH transport, host key checked against the image's keys.

        A bare Transport with its own log channel: while a guest boots, paramiko's default
        logger would print a traceback for every refused banner.
        """
        sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        t = paramiko.Transport(sock)
        t.set_log_channel("gpulab.lab.ssh")
        t.banner_timeout = timeout
        t.auth_timeout = timeout
        try:
            t.start_client(timeout=timeout)
            remote = t.get_remote_server_key()
            known = {tuple(ln.split()[:2]) for ln in self.host_keys()}
            if (remote.get_name(), remote.get_base64()) not in known:
                raise paramiko.SSHException(f"port {port}: host key is not the image's")
            t.auth_publickey("root", self._pkey())
        except BaseException:
            t.close()
            raise
        return t

    def run(self, port: int, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run ``command`` as root on the guest at ``port``; (exit status, stdout+stderr)."""
        t = self._transport(port, timeout)
        try:
            chan = t.open_session(timeout=timeout)
            chan.settimeout(timeout)
            chan.set_combine_stderr(True)
            chan.exec_command(command)
            out = b"".join(iter(lambda: chan.recv(65536), b""))
            return chan.recv_exit_status(), out.decode(errors="replace")
        finally:
            t.close()

    def ready(self, port: int, timeout: float = 5) -> bool:
        """A real login and command: the only proof a guest is ready."""
        try:
            rc, _ = self.run(port, "true", timeout=timeout)
        except Exception:
            return False
        return rc == 0
