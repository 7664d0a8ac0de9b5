"""The host's Ollama model store: its manifests (exact bytes) and the blobs it holds."""

from __future__ import annotations

import base64
import binascii
import posixpath
import shlex

from pyinfra.api.facts import FactBase

from gpulab.facts.model import ModelStoreFacts, StoreManifest

# Beside blobs/ and manifests/, where Ollama neither lists nor prunes: one line per blob
# gpulab has checked, ``sha256-<hex> <size> <mtime>`` (find's %T@, nanoseconds).
VERIFIED_STAMP = ".gpulab-verified"


def stamp_path(models_dir: str) -> str:
    """The stamp file of the store at ``models_dir``."""
    return posixpath.join(models_dir, VERIFIED_STAMP)


def blob_check_command(models_dir: str) -> str:
    """Shell printing ``blob NAME SIZE MTIME STATUS`` for each blob (partials excluded).

    STATUS is ``stamped`` (in the stamp with this size and mtime: not hashed again),
    ``sound`` or ``corrupt`` (hashed now). Rewriting a blob changes its mtime, so a blob
    changed since gpulab checked it is hashed again; one that kept its size and mtime is not
    (the price of a rerun that does not read every GB).
    """
    root = shlex.quote(models_dir)
    stamp = shlex.quote(stamp_path(models_dir))
    return (
        f"if [ -d {root}/blobs ]; then find {root}/blobs -maxdepth 1 -type f "
        "-regextype posix-extended -regex '.*/sha256-[0-9a-f]{64}' -printf '%f %s %T@\\n' | "
        "while read -r f s m; do "
        f'if grep -qxF "$f $s $m" {stamp} 2>/dev/null; then st=stamped; '
        f'elif [ "$(sha256sum < {root}/blobs/"$f")" = "${{f#sha256-}}  -" ]; then st=sound; '
        'else st=corrupt; fi; echo "blob $f $s $m $st"; done; fi'
    )


class OllamaModelStore(FactBase[ModelStoreFacts]):
    """Manifests four levels below ``manifests/`` (as ``manifest.Manifests`` globs them) with
    their bytes, and every ``blobs/sha256-<hex>`` file with its size, sha256-checked unless
    gpulab's stamp says it was already (:func:`blob_check_command`).

    .. code:: python

        host.get_fact(OllamaModelStore, models_dir="/usr/share/ollama/.ollama/models")
        # ModelStoreFacts(manifests=(StoreManifest(path="registry.ollama.ai/library/qwen2.5/7b",
        #                 data_base64="eyJzY2hl..."),), blobs={"sha256-2bada8...": 4683073952},
        #                 corrupt=(), unstamped=())
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
            f"{blob_check_command(models_dir)}; true"
        )

    def process(self, output: list[str]) -> ModelStoreFacts:
        manifests: list[StoreManifest] = []
        blobs: dict[str, int] = {}
        corrupt: list[str] = []
        unstamped: list[str] = []
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            if kind == "manifest":
                name, _, value = rest.partition(" ")
                try:
                    base64.b64decode(value, validate=True)
                except binascii.Error:
                    continue
                manifests.append(StoreManifest(path=name, data_base64=value))
                continue
            fields = rest.split()
            if kind != "blob" or len(fields) != 4 or not fields[1].isdigit():
                continue
            name, size, mtime, status = fields
            blobs[name] = int(size)
            if status == "corrupt":
                corrupt.append(name)
            elif status == "sound":
                unstamped.append(f"{name} {size} {mtime}")
        return ModelStoreFacts(manifests=tuple(manifests), blobs=blobs, corrupt=tuple(corrupt),
                               unstamped=tuple(unstamped))
