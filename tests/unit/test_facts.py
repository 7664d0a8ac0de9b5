"""gpulab.facts: every parser on real recorded outputs, each fact's process(), gather_host_facts.

Recorded outputs live in ``tests/data/recorded/``; each file's first line names its source and is
not part of the output.  Inputs written inline here are for things no public report recorded
(sysfs listings, wsl.conf, systemctl, meminfo) or are marked as built from a recorded value.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.facts import FactBase
from pyinfra.facts.server import Arch, Hostname, KernelVersion, RebootRequired

from gpulab.facts.cuda import (
    CudaToolkits,
    parse_cuda_toolkits,
    parse_cuda_version_json,
    parse_cuda_version_txt,
)
from gpulab.facts.gather import (
    READ_TOGETHER,
    FactOutputs,
    FactsInOneCommand,
    gather_host_facts,
)
from gpulab.facts.model import (
    FACTS_FORMAT,
    CudaToolkit,
    FactsFile,
    HostFacts,
    ModelStoreFacts,
    OsInfo,
    PciGpu,
    SmiGpu,
    SmiStatus,
    parse_wsl_version,
)
from gpulab.facts.models import OllamaModelStore
from gpulab.facts.nvidia import (
    WSL_NVIDIA_SMI,
    DriverLibraryVersion,
    LoadedDriverVersion,
    NvidiaSmi,
    parse_nvidia_module_version,
    parse_nvidia_smi_output,
    parse_nvidia_smi_query,
    split_smi_cells,
)
from gpulab.facts.pci import NvidiaPciDevices, parse_lspci_nn, parse_pci_devices, parse_sysfs_pci
from gpulab.facts.secure_boot import SecureBoot, parse_secure_boot
from gpulab.facts.system import (
    IsWsl,
    MemoryMib,
    OsRelease,
    SystemdRunning,
    WslSystemd,
    parse_is_wsl,
    parse_meminfo_total_mib,
    parse_os_release,
    parse_systemctl_state,
    parse_wsl_conf_systemd,
)
from tests.recorded import RECORDED, recorded

pytestmark = pytest.mark.unit

PLAN_FACTS = Path(__file__).resolve().parents[1] / "plan" / "facts"

NOT_LOADED = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)


def lines(text: str) -> list[str]:
    """Output as pyinfra hands it to ``process()``: one str per line, newlines removed."""
    return text.splitlines()


def gpus(found: tuple[PciGpu, ...]) -> list[tuple[str, str, str]]:
    return [(gpu.slot, gpu.device_id, gpu.name) for gpu in found]


# --------------------------------------------------------------------------------------------
# PCI
# --------------------------------------------------------------------------------------------

LSPCI_CASES = {
    # -nnk listing: Subsystem/Kernel lines and the HDMI audio functions are not GPUs.
    "lspci-2x3090-zotac-nnk.txt": [
        ("05:00.0", "2204", "GA102 [GeForce RTX 3090]"),
        ("84:00.0", "2204", "GA102 [GeForce RTX 3090]"),
    ],
    # Mixed cards, an Ethernet line, and a third GPU line cut short by the paste.
    "lspci-3080-5090-mixed-truncated.txt": [
        ("05:00.0", "2206", "GA102 [GeForce RTX 3080]"),
        ("0a:00.0", "2b85", "GB202 [GeForce RTX 5090]"),
    ],
    "lspci-2x-l40s.txt": [
        ("01:00.0", "26b9", "AD102GL [L40S]"),
        ("91:00.0", "26b9", "AD102GL [L40S]"),
    ],
    "lspci-2x-t4-trailing-space.txt": [
        ("21:00.0", "1eb8", "TU104GL [Tesla T4]"),
        ("23:00.0", "1eb8", "TU104GL [Tesla T4]"),
    ],
    "lspci-1080ti-gt710-iommu.txt": [
        ("0a:00.0", "1b06", "GP102 [GeForce GTX 1080 Ti]"),
        ("0b:00.0", "128b", "GK208B [GeForce GT 710]"),
    ],
    # Intel iGPU and PCI bridge dropped; a 3D-controller laptop dGPU and a VGA eGPU kept.
    "lspci-laptop-mx130-egpu-970.txt": [
        ("02:00.0", "174d", "GM108M [GeForce MX130]"),
        ("08:00.0", "13c2", "GM204 [GeForce GTX 970]"),
    ],
    "lspci-gtx1650-iommu.txt": [("01:00.0", "1f82", "TU117 [GeForce GTX 1650]")],
    "lspci-rtx3070.txt": [("08:00.0", "2484", "GA104 [GeForce RTX 3070]")],
    "lspci-rtx3060.txt": [("03:00.0", "2503", "GA106 [GeForce RTX 3060]")],
    # AMD iGPU and AMD audio next to the NVIDIA card; shell prompts around the output.
    "lspci-rtx4060-amd-igpu-prompt.txt": [("01:00.0", "2882", "AD107 [GeForce RTX 4060]")],
    "lspci-rtx4090-audio-first.txt": [("0a:00.0", "2684", "AD102 [GeForce RTX 4090]")],
    # pci.ids older than the card: lspci says only "Device".
    "lspci-l40s-old-pciids.txt": [("30:00.0", "26b9", "Device 26b9")],
    "lspci-a2000-vm-odd-slots.txt": [("06:10.0", "2531", "GA106 [RTX A2000]")],
    "lspci-h100-vfio-indented.txt": [("41:00.0", "2331", "GH100 [H100 PCIe]")],
    # `-D` slots: domain 0000 dropped so the slot reads like plain lspci's.
    "lspci-rtx3050ti-domain.txt": [("01:00.0", "25a0", "GA107M [GeForce RTX 3050 Ti Mobile]")],
    # QEMU's std-VGA has no vendor name at all.
    "lspci-1080ti-vm-debian12.txt": [("01:00.0", "1b06", "GP102 [GeForce GTX 1080 Ti]")],
    # WSL 2: only Microsoft's paravirtual device, no NVIDIA function.
    "lspci-wsl2-microsoft.txt": [],
    # No NVIDIA device: `lspci -nn -d 10de:` prints nothing.
    "lspci-empty.txt": [],
    # A mail client broke the GPU line in two: neither half is an lspci line, nothing is guessed.
    "lspci-rtx5090-mailwrapped.txt": [],
}


@pytest.mark.parametrize("name", sorted(LSPCI_CASES))
def test_parse_lspci_nn_recorded(name: str) -> None:
    assert gpus(parse_lspci_nn(recorded(name))) == LSPCI_CASES[name]


def test_lspci_keeps_only_display_and_3d_classes() -> None:
    text = recorded("lspci-3080-5090-mixed-truncated.txt")
    audio_ids = {"1aef", "22e8"}
    assert audio_ids.isdisjoint(gpu.device_id for gpu in parse_lspci_nn(text))
    # 0380 ("Display controller") counts; USB (0c03) and UCSI (0c80) functions do not.
    built = (
        "01:00.0 Display controller [0380]: NVIDIA Corporation Device [10de:1234] (rev a1)\n"
        "01:00.2 USB controller [0c03]: NVIDIA Corporation TU102 USB 3.1 Host Controller "
        "[10de:1ad6] (rev a1)\n"
        "01:00.3 Serial bus controller [0c80]: NVIDIA Corporation TU102 USB Type-C UCSI "
        "Controller [10de:1ad7] (rev a1)"
    )
    assert gpus(parse_lspci_nn(built)) == [("01:00.0", "1234", "Device 1234")]


def test_lspci_keeps_a_nonzero_domain() -> None:
    line = (
        "0001:1a:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 PCIe] [10de:2331] "
        "(rev a1) (prog-if 00 [VGA controller])"
    )
    assert gpus(parse_lspci_nn(line)) == [("0001:1a:00.0", "2331", "GH100 [H100 PCIe]")]


SYSFS = (
    "sysfs 0000:00:02.0 0x8086 0x3e9b 0x030000\n"
    "sysfs 0000:01:00.0 0x10de 0x2b85 0x030000\n"
    "sysfs 0000:01:00.1 0x10de 0x22e8 0x040300\n"
    "sysfs 0001:1a:00.0 0x10de 0x2331 0x030200\n"
)


def test_parse_sysfs_pci() -> None:
    assert gpus(parse_sysfs_pci(SYSFS)) == [
        ("01:00.0", "2b85", "Device 2b85"),
        ("0001:1a:00.0", "2331", "Device 2331"),
    ]


def test_parse_pci_devices_picks_the_source() -> None:
    assert parse_pci_devices(SYSFS) == parse_sysfs_pci(SYSFS)
    text = recorded("lspci-rtx3070.txt")
    assert parse_pci_devices(text) == parse_lspci_nn(text)


def test_nvidia_pci_devices_fact() -> None:
    fact = NvidiaPciDevices()
    assert "lspci -nn -d 10de:" in fact.command()
    assert "/sys/bus/pci/devices" in fact.command()
    assert NvidiaPciDevices.default() == ()
    assert fact.process(lines(recorded("lspci-2x3090-zotac-nnk.txt"))) == (
        PciGpu(slot="05:00.0", device_id="2204", name="GA102 [GeForce RTX 3090]"),
        PciGpu(slot="84:00.0", device_id="2204", name="GA102 [GeForce RTX 3090]"),
    )
    assert fact.process(lines(SYSFS))[0].device_id == "2b85"


# --------------------------------------------------------------------------------------------
# nvidia-smi
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["smi-cells-na.txt", "smi-cells-not-supported.txt"], ids=["N/A", "Not Supported"]
)
def test_split_smi_cells_missing_values(name: str) -> None:
    assert split_smi_cells(recorded(name).strip()) == ["2004", "2004", "0", "44", None, "0", "0"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("smi-query-2x-l40-header.txt", [("NVIDIA L40", "580.126.09", 46068)] * 2),
        (
            "smi-query-rtx5060-laptop-header.txt",
            [("NVIDIA GeForce RTX 5060 Laptop GPU", "595.84", 8151)],
        ),
        ("smi-query-2x-l40s-extra-columns.txt", [("NVIDIA L40S", "595.71.05", 46068)] * 2),
        ("smi-query-2x-l40s-index-first.txt", [("NVIDIA L40S", "575.51.03", 46068)] * 2),
        ("smi-query-1080ti-memory-free.txt", [("NVIDIA GeForce GTX 1080 Ti", "580.159.04", 11264)]),
    ],
)
def test_parse_smi_query_recorded_with_header(
    name: str, expected: list[tuple[str, str, int]]
) -> None:
    status = parse_nvidia_smi_query(recorded(name), 0)
    assert status.exit_code == 0
    assert status.message == ""
    assert [(g.name, g.driver_version, g.memory_total_mib) for g in status.gpus] == expected


def test_parse_smi_query_noheader_nounits_multi_gpu() -> None:
    # What the fact's own query prints (csv,noheader,nounits), with the recorded L40S values.
    status = parse_nvidia_smi_query(
        "NVIDIA L40S, 595.71.05, 46068\nNVIDIA L40S, 595.71.05, 46068", 0
    )
    assert (
        status.gpus
        == (SmiGpu(name="NVIDIA L40S", driver_version="595.71.05", memory_total_mib=46068),) * 2
    )


@pytest.mark.parametrize("cell", ["[N/A]", "[Not Supported]"])
def test_parse_smi_query_missing_memory(cell: str) -> None:
    status = parse_nvidia_smi_query(f"NVIDIA GeForce GT 740M, 470.256.02, {cell}", 0)
    assert status.gpus == (
        SmiGpu(name="NVIDIA GeForce GT 740M", driver_version="470.256.02", memory_total_mib=None),
    )


@pytest.mark.parametrize(
    ("name", "exit_code", "message"),
    [
        ("smi-driver-not-loaded.txt", 9, NOT_LOADED),
        # WSL with Linux driver packages wrongly installed; leading spaces as posted.
        ("smi-driver-not-loaded-wsl.txt", 9, NOT_LOADED),
        (
            "smi-version-mismatch.txt",
            18,
            "Failed to initialize NVML: Driver/library version mismatch",
        ),
        ("smi-no-devices-trailing-space.txt", 6, "No devices were found"),
        # The exit code was not recorded; 255 is nvidia-smi's "other error".
        (
            "smi-wsl-access-blocked.txt",
            255,
            "Failed to initialize NVML: GPU access blocked by the operating system",
        ),
    ],
)
def test_parse_smi_query_errors(name: str, exit_code: int, message: str) -> None:
    status = parse_nvidia_smi_query(recorded(name), exit_code)
    assert status == SmiStatus(exit_code=exit_code, gpus=(), message=message)


def test_parse_smi_query_not_installed() -> None:
    assert parse_nvidia_smi_query("", None) == SmiStatus()


def test_nvidia_smi_fact_driver_not_loaded() -> None:
    raw = [*lines(recorded("smi-driver-not-loaded.txt")), "exit=9"]
    assert NvidiaSmi().process(raw) == SmiStatus(exit_code=9, message=NOT_LOADED)


def test_nvidia_smi_fact_ok_multi_gpu() -> None:
    raw = ["NVIDIA L40, 580.126.09, 46068", "NVIDIA L40, 580.126.09, 46068", "exit=0"]
    status = NvidiaSmi().process(raw)
    assert status.exit_code == 0
    assert [g.driver_version for g in status.gpus] == ["580.126.09", "580.126.09"]


def test_nvidia_smi_fact_wsl_reports_the_windows_driver() -> None:
    # Values of the recorded 566.36 table, as the csv query prints them.
    raw = ["NVIDIA GeForce RTX 3050 Laptop GPU, 566.36, 4096", "exit=0"]
    status = NvidiaSmi().process(raw)
    assert status.gpus == (
        SmiGpu(
            name="NVIDIA GeForce RTX 3050 Laptop GPU",
            driver_version="566.36",
            memory_total_mib=4096,
        ),
    )
    assert WSL_NVIDIA_SMI == "/usr/lib/wsl/lib/nvidia-smi"
    assert WSL_NVIDIA_SMI in NvidiaSmi().command()


def test_nvidia_smi_fact_not_installed() -> None:
    assert NvidiaSmi().process(["gpulab: nvidia-smi not found"]) == SmiStatus()
    # The shell could not run it (127): same as not installed.
    raw = [*lines(recorded("smi-bash-command-not-found.txt")), "exit=127"]
    assert NvidiaSmi().process(raw) == SmiStatus()
    assert NvidiaSmi.default() == SmiStatus()


def test_nvidia_smi_command_captures_the_exit_code() -> None:
    command = NvidiaSmi().command()
    assert "--query-gpu=name,driver_version,memory.total" in command
    assert "--format=csv,noheader,nounits" in command
    assert "2>&1" in command
    assert 'echo "exit=$?"' in command


def test_parse_nvidia_smi_output_without_exit_line() -> None:
    assert parse_nvidia_smi_output("NVIDIA L40, 580.126.09, 46068\n\n").exit_code == 0
    status = parse_nvidia_smi_output(recorded("smi-version-mismatch.txt"))
    assert (status.exit_code, status.message) == (
        255,
        "Failed to initialize NVML: Driver/library version mismatch",
    )


# --------------------------------------------------------------------------------------------
# WSL, systemd
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("uname-r-wsl2-6.6.txt", 2),
        ("proc-version-wsl2-6.6.txt", 2),
        ("uname-a-wsl2-5.15.167.txt", 2),
        # Early / self-built WSL 2 kernels lack the "-WSL2" suffix.
        ("proc-version-wsl2-4.19-selfbuilt.txt", 2),
        ("proc-version-wsl1-19041.txt", 1),
        ("uname-r-wsl1-18362.txt", 1),
        ("uname-a-ubuntu2204.txt", None),
        ("uname-a-ubuntu2404.txt", None),
    ],
)
def test_parse_wsl_version(name: str, version: int | None) -> None:
    assert parse_wsl_version(recorded(name)) == version
    assert parse_is_wsl(recorded(name)) is (version is not None)


def test_is_wsl_fact() -> None:
    raw = lines(recorded("uname-r-wsl2-6.6.txt") + recorded("proc-version-wsl2-6.6.txt"))
    assert IsWsl().process(raw) is True
    assert IsWsl().process(["5.15.0-161-generic"]) is False
    assert IsWsl.default() is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[boot]\nsystemd=true\n", True),
        ("[boot]\nsystemd = True\n", True),
        ("[BOOT]\nSystemd=TRUE\n", True),
        ("[boot]\nsystemd=true # turned on by the course image\n", True),
        ('[boot]\nsystemd="true"\n', True),
        ("[automount]\nenabled=true\n\n[network]\nhostname=lab\n\n[boot]\nsystemd=true\n", True),
        ("[boot]\nsystemd=false\n", False),
        ("[boot]\n# systemd=true\n", False),
        ("[network]\nsystemd=true\n", False),
        ("systemd=true\n", False),
        ("[boot]\nsystemd=true\n[boot]\nsystemd=false\n", False),
        ("", False),
    ],
)
def test_parse_wsl_conf_systemd(text: str, expected: bool) -> None:
    assert parse_wsl_conf_systemd(text) is expected


def test_wsl_systemd_fact() -> None:
    assert WslSystemd().process(["[boot]", "systemd=true"]) is True
    assert WslSystemd.default() is False
    assert "/etc/wsl.conf" in WslSystemd().command()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("running", True),
        ("degraded", True),
        ("starting", True),
        ("maintenance", False),
        ("offline", False),
        (
            "System has not been booted with systemd as init system (PID 1). Can't operate.\n"
            "Failed to connect to bus: Host is down",
            False,
        ),
        ("no-systemctl", False),
        ("", False),
    ],
)
def test_parse_systemctl_state(text: str, expected: bool) -> None:
    assert parse_systemctl_state(text) is expected
    assert SystemdRunning().process(lines(text)) is expected


# --------------------------------------------------------------------------------------------
# Secure Boot
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("mokutil-enabled.txt", "enabled"),
        ("mokutil-disabled.txt", "disabled"),
        ("mokutil-disabled-setup-mode.txt", "disabled"),
        # shim validation off: the kernel loads unsigned modules, as with Secure Boot off.
        ("mokutil-enabled-shim-validation-off.txt", "disabled"),
        ("mokutil-efi-not-supported.txt", "unsupported"),
        ("mokutil-no-secure-boot-support.txt", "unsupported"),
    ],
)
def test_parse_secure_boot_mokutil(name: str, state: str) -> None:
    assert parse_secure_boot(recorded(name)) == state
    assert SecureBoot().process(lines(recorded(name))) == state


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("gpulab-efivar SecureBootState=1", "enabled"),
        ("gpulab-efivar SecureBootState=0", "disabled"),
        ("gpulab-efivar SecureBootState=1\ngpulab-efivar MokSBStateRT=1", "disabled"),
        ("gpulab-efivar SecureBootState=absent", "unsupported"),
        ("", "unsupported"),
    ],
)
def test_parse_secure_boot_efivars(text: str, state: str) -> None:
    assert parse_secure_boot(text) == state


def test_secure_boot_fact_default_and_command() -> None:
    assert SecureBoot.default() == "unsupported"
    assert "mokutil --sb-state" in SecureBoot().command()
    assert "/sys/firmware/efi/efivars/SecureBoot-" in SecureBoot().command()


# --------------------------------------------------------------------------------------------
# Driver and CUDA
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("proc-driver-version-550.txt", "550.54.15"),
        ("proc-driver-version-550-indented.txt", "550.107.02"),
        ("proc-driver-version-open-565.txt", "565.57.01"),
        ("proc-driver-version-open-525-trailing.txt", "525.60.11"),
        ("proc-driver-version-open-l4t.txt", "35.3.1"),
    ],
)
def test_parse_nvidia_module_version_proc(name: str, version: str) -> None:
    assert parse_nvidia_module_version(recorded(name)) == version


def test_loaded_driver_version_fact() -> None:
    # /sys/module/nvidia/version holds just the version.
    assert LoadedDriverVersion().process(["580.95.05"]) == "580.95.05"
    assert LoadedDriverVersion().process([""]) is None
    assert LoadedDriverVersion.default() is None
    assert parse_nvidia_module_version("") is None


def test_driver_library_version_fact() -> None:
    # `ls` of the NVML library: the versioned file names the installed driver.
    listing = ["/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
               "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05"]
    assert DriverLibraryVersion().process(listing) == "580.95.05"
    assert DriverLibraryVersion().process([]) is None
    assert DriverLibraryVersion.default() is None


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("cuda-13.3.1-version.json", "13.3.1"),
        ("cuda-11.5.2-version.json", "11.5.2"),
        # Not valid JSON (the author elided lines); the SDK version carries a build date.
        ("cuda-11.8-elided-version.json", "11.8.20220929"),
        ("cuda-12.6-trimmed-version.json", "12.6.20241114"),
        ("cuda-13.0.2-fragment-version.json", "13.0.2"),
    ],
)
def test_parse_cuda_version_json(name: str, version: str) -> None:
    assert parse_cuda_version_json(recorded(name)) == version


def test_parse_cuda_version_json_without_sdk_entry() -> None:
    assert (
        parse_cuda_version_json('{"cuda_nvcc": {"name": "CUDA NVCC", "version": "12.8.93"}}')
        is None
    )
    assert parse_cuda_version_json("[]") is None
    assert parse_cuda_version_json("") is None


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("cuda-10.0-version.txt", "10.0.130"),
        ("cuda-11.0-version.txt", "11.0.207"),
        ("cuda-10.2-version.txt", "10.2.89"),
    ],
)
def test_parse_cuda_version_txt(name: str, version: str) -> None:
    assert parse_cuda_version_txt(recorded(name)) == version


def _toolkit_listing() -> str:
    """What CudaToolkits' command prints on a host with four toolkit directories."""
    return "\n".join(
        [
            "==> /usr/local/cuda-13.3/version.json <==",
            recorded("cuda-13.3.1-version.json"),
            "==> /usr/local/cuda-10.0/version.txt <==",
            recorded("cuda-10.0-version.txt"),
            "==> /usr/local/cuda-11.5/version.json <==",
            recorded("cuda-11.5.2-version.json"),
            "==> /usr/local/cuda-11.8/version.json <==",
            recorded("cuda-11.8-elided-version.json"),
        ]
    )


def test_parse_cuda_toolkits_sorted_by_version() -> None:
    assert parse_cuda_toolkits(_toolkit_listing()) == (
        CudaToolkit(path="/usr/local/cuda-10.0", version="10.0.130"),
        CudaToolkit(path="/usr/local/cuda-11.5", version="11.5.2"),
        CudaToolkit(path="/usr/local/cuda-11.8", version="11.8.20220929"),
        CudaToolkit(path="/usr/local/cuda-13.3", version="13.3.1"),
    )


def test_parse_cuda_toolkits_skips_files_without_a_version() -> None:
    listing = "==> /usr/local/cuda-12.4/version.json <==\n{}\n"
    assert parse_cuda_toolkits(listing) == ()
    assert parse_cuda_toolkits("") == ()


def test_cuda_toolkits_fact() -> None:
    found = CudaToolkits().process(lines(_toolkit_listing()))
    assert [t.version for t in found] == ["10.0.130", "11.5.2", "11.8.20220929", "13.3.1"]
    assert CudaToolkits.default() == ()
    assert "/usr/local/cuda-*" in CudaToolkits().command()


# --------------------------------------------------------------------------------------------
# OS and memory
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("os-release-ubuntu2204.5.txt", ("ubuntu", "22.04", "jammy", "Ubuntu 22.04.5 LTS")),
        ("os-release-ubuntu2204.4-wsl2.txt", ("ubuntu", "22.04", "jammy", "Ubuntu 22.04.4 LTS")),
        ("os-release-ubuntu2404.2.txt", ("ubuntu", "24.04", "noble", "Ubuntu 24.04.2 LTS")),
        ("os-release-ubuntu2404.2-wsl2.txt", ("ubuntu", "24.04", "noble", "Ubuntu 24.04.2 LTS")),
        # Indented by the README, with the shell prompt line in front.
        (
            "os-release-ubuntu2404.1-indented-prompt.txt",
            ("ubuntu", "24.04", "noble", "Ubuntu 24.04.1 LTS"),
        ),
        (
            "os-release-debian12.txt",
            ("debian", "12", "bookworm", "Debian GNU/Linux 12 (bookworm)"),
        ),
        (
            "os-release-debian12-rocal.txt",
            ("debian", "12", "bookworm", "Debian GNU/Linux 12 (bookworm)"),
        ),
        # Different field order and unquoted values.
        (
            "os-release-ubuntu2004-unquoted-urls.txt",
            ("ubuntu", "20.04", "focal", "Ubuntu 20.04.6 LTS"),
        ),
    ],
)
def test_parse_os_release(name: str, expected: tuple[str, str, str, str]) -> None:
    info = parse_os_release(recorded(name))
    assert (info.id, info.version_id, info.codename, info.pretty_name) == expected
    assert OsRelease().process(lines(recorded(name))) == info


def test_parse_os_release_codename_from_version() -> None:
    text = "\n".join(
        line
        for line in recorded("os-release-debian12.txt").splitlines()
        if not line.startswith("VERSION_CODENAME=")
    )
    assert parse_os_release(text).codename == "bookworm"


def test_os_release_default() -> None:
    assert OsRelease.default() == OsInfo(id="", version_id="")
    assert parse_os_release("") == OsInfo(id="", version_id="")


def test_memory() -> None:
    meminfo = "MemTotal:       32746920 kB\nMemFree:        30140512 kB\n"
    assert parse_meminfo_total_mib(meminfo) == 31979
    assert MemoryMib().process(["MemTotal:       16306084 kB"]) == 15923
    assert parse_meminfo_total_mib("") == 0
    assert MemoryMib.default() == 0


# --------------------------------------------------------------------------------------------
# gather_host_facts
# --------------------------------------------------------------------------------------------


class FakeHost:
    """Answers ``get_fact`` from canned values and records what was asked."""

    def __init__(self, values: dict[type[FactBase[Any]], Any]) -> None:
        self.values = values
        self.asked: list[type[FactBase[Any]]] = []

    def get_fact(self, name_or_cls: type[FactBase[Any]], *args: Any, **kwargs: Any) -> Any:
        self.asked.append(name_or_cls)
        return self.values[name_or_cls]


def _bare_metal_values() -> dict[type[FactBase[Any]], Any]:
    return {
        Hostname: "lab-noble-5090",
        Arch: "x86_64",
        KernelVersion: "6.8.0-90-generic",
        RebootRequired: False,
        OsRelease: parse_os_release(recorded("os-release-ubuntu2404.2.txt")),
        IsWsl: False,
        SystemdRunning: True,
        SecureBoot: "disabled",
        NvidiaPciDevices: parse_lspci_nn(recorded("lspci-3080-5090-mixed-truncated.txt")),
        NvidiaSmi: SmiStatus(exit_code=9, message=NOT_LOADED),
        LoadedDriverVersion: None,
        DriverLibraryVersion: "580.95.05",
        CudaToolkits: (CudaToolkit(path="/usr/local/cuda-12.8", version="12.8.1"),),
        MemoryMib: 64008,
        OllamaModelStore: ModelStoreFacts(),
    }


def test_gather_host_facts_bare_metal() -> None:
    host = FakeHost(_bare_metal_values())
    facts = gather_host_facts(host, "/srv/models")
    assert facts == HostFacts(
        hostname="lab-noble-5090",
        arch="x86_64",
        os=OsInfo(
            id="ubuntu", version_id="24.04", codename="noble", pretty_name="Ubuntu 24.04.2 LTS"
        ),
        kernel="6.8.0-90-generic",
        wsl=False,
        wsl_systemd=None,
        systemd_running=True,
        secure_boot="disabled",
        pci_gpus=(
            PciGpu(slot="05:00.0", device_id="2206", name="GA102 [GeForce RTX 3080]"),
            PciGpu(slot="0a:00.0", device_id="2b85", name="GB202 [GeForce RTX 5090]"),
        ),
        smi=SmiStatus(exit_code=9, message=NOT_LOADED),
        loaded_driver_version=None,
        driver_library_version="580.95.05",
        cuda_toolkits=(CudaToolkit(path="/usr/local/cuda-12.8", version="12.8.1"),),
        reboot_required=False,
        memory_mib=64008,
    )
    # wsl.conf means nothing off WSL, so it is not read.
    assert WslSystemd not in host.asked


def test_gather_host_facts_wsl() -> None:
    values = _bare_metal_values() | {
        Hostname: "wsl-jammy-566\n",
        KernelVersion: "5.15.167.4-microsoft-standard-WSL2",
        IsWsl: True,
        WslSystemd: True,
        SecureBoot: "unsupported",
        NvidiaPciDevices: (),
        NvidiaSmi: parse_nvidia_smi_output(
            "NVIDIA GeForce RTX 3050 Laptop GPU, 566.36, 4096\nexit=0"
        ),
    }
    facts = gather_host_facts(FakeHost(values), "/srv/models")
    assert facts.hostname == "wsl-jammy-566"
    assert (facts.wsl, facts.wsl_systemd) == (True, True)
    assert facts.pci_gpus == ()
    assert facts.smi.gpus[0].driver_version == "566.36"


def test_gather_host_facts_empty_plain_facts() -> None:
    # pyinfra's plain facts give None when their command printed nothing.
    values = _bare_metal_values() | {Hostname: None, Arch: None, KernelVersion: None}
    facts = gather_host_facts(FakeHost(values), "/srv/models")
    assert (facts.hostname, facts.arch, facts.kernel) == ("localhost", "x86_64", "")


class ShellHost:
    """``get_fact`` as pyinfra does it, each fact's command run here by ``sh -c``."""

    def get_fact(self, name_or_cls: type[FactBase[Any]], *args: Any, **kwargs: Any) -> Any:
        fact = name_or_cls()
        run = subprocess.run(["sh", "-c", str(fact.command(*args, **kwargs))],
                             capture_output=True, text=True, check=False)
        lines = run.stdout.splitlines()
        return fact.process(lines) if run.returncode == 0 and lines else fact.default()


def test_one_command_gives_each_fact_what_its_own_command_gives(tmp_path: Path) -> None:
    """Run for real on this machine: the facts read together equal the facts read one by one
    (this machine has no NVIDIA GPU, a models directory with one blob)."""
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / f"sha256-{'0' * 64}").write_bytes(b"x")
    one_by_one = gather_host_facts(ShellHost(), str(tmp_path))
    together = FactsInOneCommand(ShellHost(), str(tmp_path))
    assert set(together.outputs) == {cls.__name__ for cls in READ_TOGETHER}
    assert gather_host_facts(together, str(tmp_path)) == one_by_one


def test_fact_outputs_split_by_marker_and_failed_commands_give_the_default() -> None:
    outputs = FactOutputs().process([
        "@@gpulab-fact Hostname", "lab-01", "@@gpulab-fact-rc Hostname 0",
        "@@gpulab-fact Arch", "x86_64@@gpulab-fact-rc Arch 0",  # no newline after its output
        "@@gpulab-fact MemoryMib", "MemTotal: 1 kB", "@@gpulab-fact-rc MemoryMib 2",
    ])
    assert outputs == {"Hostname": (0, ["lab-01"]), "Arch": (0, ["x86_64"]),
                       "MemoryMib": (2, ["MemTotal: 1 kB"])}

    class Answered:
        def get_fact(self, name_or_cls: type[FactBase[Any]], *args: Any, **kwargs: Any) -> Any:
            return outputs

    facts = FactsInOneCommand(Answered(), "/m")
    assert facts.get_fact(Arch) == "x86_64"
    assert facts.get_fact(MemoryMib) == MemoryMib.default()  # its command failed
    assert facts.get_fact(KernelVersion) is None  # no output at all: pyinfra's default


# --------------------------------------------------------------------------------------------
# Recorded plan facts (tests/plan/facts) agree with the recorded outputs
# --------------------------------------------------------------------------------------------

PLAN_FILES = {
    "ubuntu2204-rtx3070.json": ("ubuntu", "22.04", ["2484"], None),
    "ubuntu2404-rtx5090.json": ("ubuntu", "24.04", ["2b85"], None),
    "wsl2-566.json": ("ubuntu", "22.04", [], 0),
    "wsl2-nosystemd.json": ("ubuntu", "22.04", [], 0),
    "debian12-gtx1650.json": ("debian", "12", ["1f82"], None),
    "ubuntu2404-pascal.json": ("ubuntu", "24.04", ["1b06"], None),
    "debian12-nogpu.json": ("debian", "12", [], None),
}


def _recorded_lspci_gpus() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in RECORDED.glob("lspci-*.txt"):
        found |= {(g.device_id, g.name) for g in parse_lspci_nn(recorded(path.name))}
    return found


@pytest.mark.parametrize("name", sorted(PLAN_FILES))
def test_plan_facts_file(name: str) -> None:
    os_id, version_id, device_ids, smi_exit = PLAN_FILES[name]
    recorded_file = FactsFile.model_validate_json((PLAN_FACTS / name).read_text())
    facts = recorded_file.facts
    assert recorded_file.format == FACTS_FORMAT
    assert recorded_file.host == facts.hostname
    assert (facts.os.id, facts.os.version_id) == (os_id, version_id)
    assert [g.device_id for g in facts.pci_gpus] == device_ids
    assert facts.smi.exit_code == smi_exit
    assert facts.memory_mib > 1024
    # Each GPU is one lspci really printed, id and name alike.
    assert {(g.device_id, g.name) for g in facts.pci_gpus} <= _recorded_lspci_gpus()
    assert facts.wsl == parse_is_wsl(facts.kernel)


def test_plan_facts_hostnames_are_distinct() -> None:
    names = [
        FactsFile.model_validate_json((PLAN_FACTS / name).read_text()).facts.hostname
        for name in PLAN_FILES
    ]
    assert len(set(names)) == len(names)


def test_plan_facts_wsl_variants() -> None:
    def load(name: str) -> HostFacts:
        return FactsFile.model_validate_json((PLAN_FACTS / name).read_text()).facts

    with_systemd, without = load("wsl2-566.json"), load("wsl2-nosystemd.json")
    assert (with_systemd.wsl_systemd, with_systemd.systemd_running) == (True, True)
    assert (without.wsl_systemd, without.systemd_running) == (False, False)
    assert with_systemd.kernel.endswith("-microsoft-standard-WSL2")
    assert with_systemd.smi.gpus[0].driver_version == "566.36"
    assert load("ubuntu2204-rtx3070.json").secure_boot == "enabled"
    assert load("ubuntu2404-rtx5090.json").secure_boot == "disabled"
