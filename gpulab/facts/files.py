"""Facts about single paths on a host: a symlink's target, a small file's text."""

from __future__ import annotations

import shlex

from pyinfra.api.facts import FactBase


class _OptionalText(FactBase[str | None]):
    """A command that prints one value or nothing: the stripped text, or None."""

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        text = "".join(output).strip()
        return text or None


class LinkTarget(_OptionalText):
    """Where a symlink points (``readlink``), or None when the path is no symlink.

    .. code:: python

        host.get_fact(LinkTarget, path="/etc/alternatives/cuda")  # "/usr/local/cuda-12.6"
    """

    def command(self, path: str) -> str:
        return f"readlink {shlex.quote(path)} 2>/dev/null || true"


class FileText(_OptionalText):
    """The stripped text of a small file, or None when it is missing or empty.

    .. code:: python

        host.get_fact(FileText, path="/opt/ollama/0.34.2/.gpulab-sha256")  # "e155b8..."
    """

    def command(self, path: str) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null || true"
