"""CUDA toolkits installed under ``/usr/local/cuda-X.Y``."""

from __future__ import annotations

import json
import re
from typing import Any

from pyinfra.api.facts import FactBase

from gpulab.facts.model import CudaToolkit

_TOOLKIT_HEADER = re.compile(r"^==> (?P<path>.+?) <==$")

# The "cuda" object's version; used when the file is not valid JSON (pasted or truncated).
_CUDA_JSON_VERSION = re.compile(r'"cuda"\s*:\s*\{[^{}]*?"version"\s*:\s*"(?P<version>[^"]+)"')


def parse_cuda_version_json(text: str) -> str | None:
    """``cuda.version`` of a toolkit's ``version.json`` (CUDA >= 11.1), verbatim.

    Some releases stamp a build date (``11.8.20220929``, ``12.6.20241114``); it is kept as is.
    Example::

        >>> parse_cuda_version_json('{"cuda": {"name": "CUDA SDK", "version": "13.0.2"}}')
        '13.0.2'
    """
    try:
        data: Any = json.loads(text)
    except ValueError:
        m = _CUDA_JSON_VERSION.search(text)
        return m["version"] if m else None
    if isinstance(data, dict):
        cuda = data.get("cuda")
        if isinstance(cuda, dict) and isinstance(cuda.get("version"), str):
            return str(cuda["version"])
    return None


def parse_cuda_version_txt(text: str) -> str | None:
    """Version in an old toolkit's ``version.txt`` (CUDA <= 11.0). Example::

    >>> parse_cuda_version_txt("CUDA Version 10.0.130\\nCUDA Patch Version 10.0.130.1")
    '10.0.130'
    """
    m = re.search(r"^\s*CUDA Version\s+(\S+)", text, re.MULTILINE)
    return m[1] if m else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def parse_cuda_toolkits(text: str) -> tuple[CudaToolkit, ...]:
    """Toolkits from our listing: ``==> <file> <==`` headers, each followed by that file.

    A directory without a version file (left behind by ``apt remove``) is not a toolkit.  Sorted
    by version.  Example::

        >>> parse_cuda_toolkits('==> /usr/local/cuda-12.4/version.json <==\\n'
        ...                     '{"cuda": {"name": "CUDA SDK", "version": "12.4.1"}}')
        (CudaToolkit(path='/usr/local/cuda-12.4', version='12.4.1'),)
    """
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if m := _TOOLKIT_HEADER.match(line.strip()):
            sections.append((m["path"], []))
        elif sections:
            sections[-1][1].append(line)
    toolkits: list[CudaToolkit] = []
    for path, body in sections:
        directory, _, filename = path.rpartition("/")
        content = "\n".join(body)
        if filename == "version.json":
            version = parse_cuda_version_json(content)
        elif filename == "version.txt":
            version = parse_cuda_version_txt(content)
        else:
            version = None
        if version:
            toolkits.append(CudaToolkit(path=directory, version=version))
    return tuple(sorted(toolkits, key=lambda t: (_version_key(t.version), t.path)))


class CudaToolkits(FactBase[tuple[CudaToolkit, ...]]):
    """CUDA toolkits installed under ``/usr/local/cuda-X.Y`` (not the ``cuda``/``cuda-X`` links).

    Output and value::

        ==> /usr/local/cuda-12.9/version.json <==
        { "cuda" : { "name" : "CUDA SDK", "version" : "12.9.1" }, ... }
        -> (CudaToolkit(path="/usr/local/cuda-12.9", version="12.9.1"),)
    """

    def command(self) -> str:
        # Symlinks are skipped: cuda-12 -> /etc/alternatives/cuda-12 would list 12.x twice.
        return (
            "for d in /usr/local/cuda-*; do "
            '[ -d "$d" ] && [ ! -L "$d" ] || continue; '
            'for f in "$d/version.json" "$d/version.txt"; do '
            '[ -r "$f" ] || continue; echo "==> $f <=="; cat "$f"; echo; break; '
            "done; done"
        )

    @staticmethod
    def default() -> tuple[CudaToolkit, ...]:
        return ()

    def process(self, output: list[str]) -> tuple[CudaToolkit, ...]:
        return parse_cuda_toolkits("\n".join(output))

