"""Facts about the Ollama install gpulab manages under ``/opt/ollama``; they read, never change.

    host.get_fact(OllamaVersionDirs)  # -> ["0.33.1", "0.34.2"]
"""

from __future__ import annotations

import shlex

from pyinfra.api.facts import FactBase

from gpulab.plan.ollama import MARKER, OPT_DIR


class OllamaVersionDirs(FactBase[list[str]]):
    """The versions unpacked side by side under ``/opt/ollama/`` (complete ones only)."""

    def command(self) -> str:
        opt = shlex.quote(OPT_DIR)
        return (f'for d in {opt}/*/; do [ -f "$d{MARKER}" ] && basename "$d"; done'
                " 2>/dev/null; true")

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())
