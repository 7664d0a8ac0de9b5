"""Whether this host reaches an HTTP server, asked from the host itself (curl)."""

from __future__ import annotations

import shlex

from pyinfra.api.facts import FactBase


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
