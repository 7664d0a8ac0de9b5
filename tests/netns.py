"""Network namespaces the tests make: create, remove, and open a socket inside one.

A thread that ``setns``'s into a namespace creates sockets there; the sockets stay in it when
other threads (in this machine's namespace) use them. So a server can listen inside a test's
namespace and still fetch from this machine's network, which is what the apt proxy does.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
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
    """``make()`` run in a thread inside netns ``name``; what it returns (or raises)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                libc = ctypes.CDLL("libc.so.6", use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into netns {name}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(make())
        except BaseException as error:  # handed to the caller's thread
            errors.append(error)

    thread = threading.Thread(target=run, name=f"netns:{name}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
