"""The host's Ollama model store: its manifests (exact bytes) and the blobs it holds."""

from __future__ import annotations

import base64
import binascii
import shlex

from pyinfra.api.facts import FactBase

from gpulab.facts.model import ModelStoreFacts, StoreManifest


class OllamaModelStore(FactBase[ModelStoreFacts]):
    """Manifests four levels below ``manifests/`` (as ``manifest.Manifests`` globs them) with
    their bytes, and every ``blobs/sha256-*`` file with its size.

    .. code:: python

        host.get_fact(OllamaModelStore, models_dir="/usr/share/ollama/.ollama/models")
        # ModelStoreFacts(manifests=(StoreManifest(path="registry.ollama.ai/library/qwen2.5/7b",
        #                 data_base64="eyJzY2hl..."),), blobs={"sha256-2bada8...": 4683073952})
    """

    @staticmethod
    def default() -> ModelStoreFacts:
        return ModelStoreFacts()

    def command(self, models_dir: str) -> str:
        # base64 keeps each manifest's exact bytes (its digest is the model's ID) on one line.
        root = shlex.quote(models_dir)
        return (
            f"if [ -d {root}/manifests ]; then cd {root}/manifests && for f in */*/*/*; do "
            '[ -f "$f" ] && printf "manifest %s %s\\n" "$f" "$(base64 -w0 < "$f")"; done; fi; '
            f"if [ -d {root}/blobs ]; then find {root}/blobs -maxdepth 1 -type f "
            "-name 'sha256-*' -printf 'blob %f %s\\n'; fi; true"
        )

    def process(self, output: list[str]) -> ModelStoreFacts:
        manifests: list[StoreManifest] = []
        blobs: dict[str, int] = {}
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            name, _, value = rest.partition(" ")
            if kind == "manifest":
                try:
                    base64.b64decode(value, validate=True)
                except binascii.Error:
                    continue
                manifests.append(StoreManifest(path=name, data_base64=value))
            elif kind == "blob" and value.isdigit():
                blobs[name] = int(value)
        return ModelStoreFacts(manifests=tuple(manifests), blobs=blobs)
