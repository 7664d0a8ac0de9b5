"""Network namespaces the tests make: create, remove, and open a socket inside one.

A socket belongs to the namespace it was created in, whoever uses it later: so a server can
listen inside a test's namespace and still fetch from this machine's network, which is what
the apt proxy does (:func:`listen_in_netns`).
"""

from __future__ import annotations

import ctypes
import os
import socket
import socketserver
import subprocess
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def add_netns(name: str) -> None:
    """``ip netns add NAME`` with its loopback up (a stale one of that name is replaced)."""
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def in_netns(name: str, make: Callable[[], T]) -> T:
    """``make()`` run inside netns ``name``, then back in this thread's own namespace.

    The calling OS thread switches and switches back (not a new thread: under gevent, which
    pyinfra brings, a "thread" is a greenlet on the same OS thread). ``make`` must neither
    block nor resolve names: gevent's resolver threads started meanwhile would stay inside.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target, f"netns {name}")
        try:
            return make()
        finally:
            _setns(own, "this machine's namespace")
    finally:
        os.close(own)
        os.close(target)


def listen_in_netns(name: str, server: socketserver.TCPServer) -> None:
    """Bind and activate a server made with ``bind_and_activate=False`` on a socket made
    inside netns ``name``: it listens there, while it serves (and resolves, fetches) here."""
    server.socket.close()
    server.socket = in_netns(name, lambda: socket.socket(server.address_family,
                                                          server.socket_type))
    server.server_bind()
    server.server_activate()


def _setns(fd: int, what: str) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into {what}: {os.strerror(err)}")
