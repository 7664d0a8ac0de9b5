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


# Each fact is one command and one round trip, ~0.4 s on a slow host: ~8 s for these 16 at
# every run. ``FactsInOneCommand`` reads them with one.
READ_TOGETHER: tuple[type[FactBase[Any]], ...] = (
    Hostname, IsWsl, Arch, OsRelease, KernelVersion, WslSystemd, SystemdRunning, SecureBoot,
    NvidiaPciDevices, NvidiaSmi, LoadedDriverVersion, DriverLibraryVersion, CudaToolkits,
    RebootRequired, MemoryMib, OllamaModelStore,
)
_MARK = "@@gpulab-fact"


def _fact_kwargs(cls: type[FactBase[Any]], models_dir: str) -> dict[str, str]:
    return {"models_dir": models_dir} if cls is OllamaModelStore else {}


class FactOutputs(FactBase[dict[str, tuple[int, list[str]]]]):
    """The output of every fact in ``READ_TOGETHER``, from one command: each fact's own
    command in a subshell between markers, by fact name: (exit status, stdout lines).

    .. code:: python

        host.get_fact(FactOutputs, models_dir="/usr/share/ollama/.ollama/models")
        # {"Hostname": (0, ["lab-01"]), "IsWsl": (0, []), ...}
    """

    @staticmethod
    def default() -> dict[str, tuple[int, list[str]]]:
        return {}

    def command(self, models_dir: str) -> str:
        return "\n".join(
            f"echo '{_MARK} {cls.__name__}'\n( {cls().command(**_fact_kwargs(cls, models_dir))}"
            f"\n)\necho \"{_MARK}-rc {cls.__name__} $?\"" for cls in READ_TOGETHER)

    def process(self, output: list[str]) -> dict[str, tuple[int, list[str]]]:
        found: dict[str, tuple[int, list[str]]] = {}
        name, lines = "", list[str]()
        for line in output:
            if line.startswith(f"{_MARK} "):
                name, lines = line.split()[1], []
            elif f"{_MARK}-rc " in line:
                # A command whose output did not end with a newline leaves its last line here.
                last, _, status = line.partition(f"{_MARK}-rc ")
                if last:
                    lines.append(last)
                found[name] = (int(status.split()[1]), lines)
            else:
                lines.append(line)
        return found


class FactsInOneCommand:
    """``get_fact`` for ``READ_TOGETHER``'s facts from one command run on ``host``, each
    output given to its own fact as pyinfra would (``process(lines)``; ``default()`` when the
    command failed or printed nothing); other facts are asked of ``host`` itself.

    .. code:: python

        facts = gather_host_facts(FactsInOneCommand(host, models_dir), models_dir)
    """

    def __init__(self, host: FactHost, models_dir: str) -> None:
        self.host = host
        self.outputs = host.get_fact(FactOutputs, models_dir=models_dir)

    def get_fact(self, name_or_cls: type[FactBase[T]], *args: Any, **kwargs: Any) -> T:
        if name_or_cls not in READ_TOGETHER:
            return self.host.get_fact(name_or_cls, *args, **kwargs)
        status, lines = self.outputs.get(name_or_cls.__name__, (1, []))
        fact = name_or_cls()
        return fact.process(lines) if status == 0 and lines else fact.default()


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
