"""pyinfra facts about the Ollama install gpulab manages; they read, never change.

Commands always exit 0 (a missing file is a fact, not a failure) and print nothing when
there is nothing to report, so the facts return ``None`` then.

    host.get_fact(OllamaUnpacked, version="0.34.2")  # -> "e155b8..." or None
"""

from __future__ import annotations

import shlex

from pyinfra.api.facts import FactBase

from gpulab.ollama import MARKER, OPT_DIR


class OllamaUnpacked(FactBase[str | None]):
    """The sha256 of the archive a complete ``/opt/ollama/<version>/`` was unpacked from."""

    def command(self, version: str) -> str:
        marker = shlex.quote(f"{OPT_DIR}/{version}/{MARKER}")
        return f"cat {marker} 2>/dev/null || true"

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        text = "".join(output).strip()
        return text or None
