"""What gpulab knows about one host: the facts the plan is made from.

This is the recorded-facts format too: ``gpulab facts`` writes one ``FactsFile`` per host and
``gpulab plan --facts`` reads them back, so a plan made offline equals one made live.
The pyinfra facts that gather these values live in ``gpulab.facts``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FACTS_FORMAT: Literal["gpulab-facts/1"] = "gpulab-facts/1"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OsInfo(_Frozen):
    """``/etc/os-release``: ``id`` ``ubuntu`` or ``debian``, ``version_id`` ``22.04`` or ``12``."""

    id: str
    version_id: str
    codename: str = ""
    pretty_name: str = ""


class PciGpu(_Frozen):
    """One NVIDIA display/3D controller from ``lspci -nn`` (audio functions excluded)."""

    slot: str
    device_id: str = Field(description="four lower-case hex digits, e.g. '2b85'")
    name: str = Field(description="lspci's device text, e.g. 'GB202 [GeForce RTX 5090]'")


class SmiGpu(_Frozen):
    """One row of ``nvidia-smi --query-gpu=name,driver_version,memory.total``."""

    name: str
    driver_version: str
    memory_total_mib: int | None = None


class SmiStatus(_Frozen):
    """What ``nvidia-smi`` said: ``exit_code`` None when it is not installed."""

    exit_code: int | None = None
    gpus: tuple[SmiGpu, ...] = ()
    message: str = ""


class CudaToolkit(_Frozen):
    """An installed toolkit under ``/usr/local/cuda-X.Y`` (from its ``version.json``)."""

    path: str
    version: str


def parse_wsl_version(text: str) -> int | None:
    """WSL generation from a kernel release / ``/proc/version`` line: 2, 1 or None (not WSL).

    WSL 2 kernels are ``<ver>-microsoft-standard-WSL2`` (``-microsoft-standard`` before 5.x); WSL 1
    fakes ``4.4.0-<build>-Microsoft`` with a capital M.  Example::

        >>> parse_wsl_version("6.6.87.2-microsoft-standard-WSL2")
        2
        >>> parse_wsl_version("4.4.0-19041-Microsoft")
        1
        >>> parse_wsl_version("5.15.0-161-generic") is None
        True
    """
    lowered = text.lower()
    if "microsoft-standard" in lowered or "-wsl2" in lowered:
        return 2
    if "microsoft" in lowered:
        return 1
    return None


class StoreManifest(_Frozen):
    """One manifest file in the host's model store: its path below ``manifests/``, its bytes."""

    path: str
    data_base64: str


class ModelStoreFacts(_Frozen):
    """The host's ``OLLAMA_MODELS``: manifests, and blob file names with their sizes.

    ``ollama pull`` trusts any blob already on disk, so gpulab checks each blob's sha256
    itself, once: a blob whose name, size and mtime are in the store's stamp file (written by
    gpulab after it checked or placed the blob) is not hashed again. ``corrupt`` are blobs
    hashed now that do not match their name; ``unstamped`` the stamp lines (``name size
    mtime``) of blobs hashed now that do, for the deploy to record.
    """

    manifests: tuple[StoreManifest, ...] = ()
    blobs: dict[str, int] = Field(default_factory=dict)
    corrupt: tuple[str, ...] = ()
    unstamped: tuple[str, ...] = ()

    def sound(self, file_name: str, size: int) -> bool:
        """The host holds this blob, whole and not corrupt."""
        return self.blobs.get(file_name) == size and file_name not in self.corrupt


class HostFacts(_Frozen):
    """Everything the plan needs to know about one host, gathered before anything changes."""

    hostname: str
    arch: str = "x86_64"
    os: OsInfo
    kernel: str = Field(description="uname -r")
    wsl: bool = False
    wsl_systemd: bool | None = Field(
        default=None, description="WSL only: [boot] systemd=true in /etc/wsl.conf"
    )
    systemd_running: bool = True
    secure_boot: Literal["enabled", "disabled", "unsupported"] = "unsupported"
    pci_gpus: tuple[PciGpu, ...] = ()
    smi: SmiStatus = SmiStatus()
    loaded_driver_version: str | None = Field(
        default=None, description="/sys/module/nvidia/version when the module is loaded"
    )
    driver_library_version: str | None = Field(
        default=None,
        description="the installed driver's userspace version (libnvidia-ml.so.<version>)",
    )
    cuda_toolkits: tuple[CudaToolkit, ...] = ()
    reboot_required: bool = False
    memory_mib: int = 0
    model_store: ModelStoreFacts = ModelStoreFacts()


class FactsFile(_Frozen):
    """One host's recorded facts, as ``gpulab facts`` writes them."""

    format: Literal["gpulab-facts/1"] = FACTS_FORMAT
    host: str
    facts: HostFacts
