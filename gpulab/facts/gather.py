"""Every fact gpulab plans from, gathered into one ``HostFacts``."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from pyinfra.api.facts import FactBase
from pyinfra.facts.server import Arch, Hostname, KernelVersion, RebootRequired

from gpulab.facts.cuda import CudaToolkits
from gpulab.facts.model import HostFacts
from gpulab.facts.models import OllamaModelStore
from gpulab.facts.nvidia import DriverLibraryVersion, LoadedDriverVersion, NvidiaSmi
from gpulab.facts.pci import NvidiaPciDevices
from gpulab.facts.secure_boot import SecureBoot
from gpulab.facts.system import IsWsl, MemoryMib, OsRelease, SystemdRunning, WslSystemd

T = TypeVar("T")

class FactHost(Protocol):
    """What ``gather_host_facts`` needs of a host: pyinfra's ``Host.get_fact``."""

    def get_fact(self, name_or_cls: type[FactBase[T]], *args: Any, **kwargs: Any) -> T: ...


def _text(value: object, fallback: str) -> str:
    """pyinfra's plain facts (Hostname, Arch, ...) return None when the command printed nothing."""
    text = str(value).strip() if value is not None else ""
    return text or fallback


def gather_host_facts(host: FactHost, models_dir: str) -> HostFacts:
    """Read every fact gpulab plans from, through ``host.get_fact``, into one HostFacts.

    Example (inside a pyinfra deploy or with a connected ``Host``)::

        facts = gather_host_facts(host, models_dir="/usr/share/ollama/.ollama/models")
        facts.pci_gpus
        # (PciGpu(slot="01:00.0", device_id="2b85", name="GB202 [GeForce RTX 5090]"),)

    ``models_dir`` is the host's ``OLLAMA_MODELS`` (``ollama_models_dir``).
    ``WslSystemd`` is only read on WSL, so ``wsl_systemd`` stays None elsewhere.
    """
    hostname = _text(host.get_fact(Hostname), "localhost")
    wsl = bool(host.get_fact(IsWsl))
    return HostFacts(
        hostname=hostname,
        arch=_text(host.get_fact(Arch), "x86_64"),
        os=host.get_fact(OsRelease),
        kernel=_text(host.get_fact(KernelVersion), ""),
        wsl=wsl,
        wsl_systemd=bool(host.get_fact(WslSystemd)) if wsl else None,
        systemd_running=bool(host.get_fact(SystemdRunning)),
        secure_boot=host.get_fact(SecureBoot),
        pci_gpus=host.get_fact(NvidiaPciDevices),
        smi=host.get_fact(NvidiaSmi),
        loaded_driver_version=host.get_fact(LoadedDriverVersion),
        driver_library_version=host.get_fact(DriverLibraryVersion),
        cuda_toolkits=host.get_fact(CudaToolkits),
        reboot_required=bool(host.get_fact(RebootRequired)),
        memory_mib=int(host.get_fact(MemoryMib)),
        model_store=host.get_fact(OllamaModelStore, models_dir=models_dir),
    )


def stand_in_facts(recorded: HostFacts, host: FactHost, models_dir: str) -> HostFacts:
    """A rehearsal guest planned as a recorded machine, with its own Ollama model store.

    The recorded file stands in for the hardware (GPU, driver, OS); the models are whatever
    this guest's disk holds now, so planning, deploying and verifying them is real.
    """
    return recorded.model_copy(
        update={"model_store": host.get_fact(OllamaModelStore, models_dir=models_dir)})
