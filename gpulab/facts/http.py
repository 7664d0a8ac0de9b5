"""What this host gets from an HTTP server, asked from the host itself (curl)."""

from __future__ import annotations

import shlex

from pyinfra.api.facts import FactBase

from gpulab.models.store import MANIFEST_MEDIA_TYPE


class HttpAnswer(FactBase[str]):
    """The HTTP status ``url`` answers this host with (``"200"``), or why none came:
    ``"curl exit 7"`` (nothing listens), ``"curl exit 28"`` (timed out), ...

    .. code:: python

        host.get_fact(HttpAnswer, url="http://10.0.0.5/gpulab-room-cache.txt")  # "200"
    """

    @staticmethod
    def default() -> str:
        return "no answer"

    def command(self, url: str) -> str:
        return (f"code=$(curl -sS -o /dev/null --connect-timeout 10 --max-time 30 "
                f"-w '%{{http_code}}' {shlex.quote(url)} 2>/dev/null) && echo \"$code\" "
                "|| echo \"curl exit $?\"")

    def requires_command(self, url: str) -> str:
        return "curl"

    def process(self, output: list[str]) -> str:
        return output[-1].strip() if output else self.default()


class RegistryManifest(FactBase[str]):
    """A model's manifest as an Ollama registry serves it to this host, base64 (its exact
    bytes: their sha256 is the model's ID), or ``"curl exit N"`` when none came.

    The ``Accept`` header is the one the registry needs (without it: ``MANIFEST_INVALID``).

    .. code:: python

        host.get_fact(RegistryManifest,
                      url="https://registry.ollama.ai/v2/library/qwen2.5/manifests/7b")
    """

    @staticmethod
    def default() -> str:
        return "no answer"

    def command(self, url: str, proxy: str | None = None) -> str:
        via = f"-x {shlex.quote(proxy)} " if proxy else ""
        return (f"f=$(mktemp); if curl -fsSL --retry 5 --retry-connrefused --connect-timeout 30 "
                f"{via}-H 'Accept: {MANIFEST_MEDIA_TYPE}' -o \"$f\" {shlex.quote(url)}; "
                "then base64 -w0 \"$f\"; echo; else echo \"curl exit $?\"; fi; rm -f \"$f\"")

    def requires_command(self, url: str, proxy: str | None = None) -> str:
        return "curl"

    def process(self, output: list[str]) -> str:
        return output[-1].strip() if output else self.default()
