"""HostPlan decisions for each platform, from facts built here (no recorded files needed)."""

from __future__ import annotations

from typing import Any

import pytest

from gpulab.facts.model import HostFacts, OsInfo, PciGpu, SmiGpu, SmiStatus
from gpulab.plan.host import PlanError, make_plan, ubuntu_kernel_flavour
from gpulab.settings import parse_settings
from tests.recorded import recorded

pytestmark = pytest.mark.unit

JAMMY = OsInfo(id="ubuntu", version_id="22.04", codename="jammy")
NOBLE = OsInfo(id="ubuntu", version_id="24.04", codename="noble")
BOOKWORM = OsInfo(id="debian", version_id="12", codename="bookworm")
RTX3070 = PciGpu(slot="01:00.0", device_id="2484", name="GA104 [GeForce RTX 3070]")
RTX5090 = PciGpu(slot="01:00.0", device_id="2b85", name="GB202 [GeForce RTX 5090]")
GTX1650 = PciGpu(slot="01:00.0", device_id="1f82", name="TU117 [GeForce GTX 1650]")
GTX1080TI = PciGpu(slot="02:00.0", device_id="1b06", name="GP102 [GeForce GTX 1080 Ti]")
GK110 = PciGpu(slot="01:00.0", device_id="1024", name="GK110BGL [Tesla K40c]")


def _facts(os: OsInfo, kernel: str, *gpus: PciGpu, **more: Any) -> HostFacts:
    return HostFacts(hostname="lab-01", os=os, kernel=kernel, pci_gpus=gpus, **more)


def _plan(facts: HostFacts, **data: Any) -> Any:
    return make_plan("lab-01", facts, parse_settings("lab-01", data))


def test_ubuntu_2204_ampere_gets_canonical_signed_open_modules() -> None:
    plan = _plan(_facts(JAMMY, "5.15.0-161-generic", RTX3070, secure_boot="enabled"))
    assert plan.platform == "ubuntu-22.04"
    assert (plan.driver.source, plan.driver.branch, plan.driver.flavour) == ("ubuntu", 580, "open")
    assert plan.driver.packages == (
        "linux-modules-nvidia-580-open-generic", "nvidia-driver-580-open",
    )
    # the kernel flavour metas are held with Canonical's prebuilt modules
    assert plan.driver.held == (*plan.driver.packages, "linux-generic", "linux-image-generic",
                                "linux-headers-generic")
    assert "kernel security updates wait" in plan.driver.reason
    assert not plan.driver.dkms  # prebuilt, Canonical-signed: fine under Secure Boot
    assert (plan.toolkit.version, plan.toolkit.package) == ("13.0.0", "cuda-toolkit-13-0")
    assert plan.toolkit.apt_version == "13.0.0-*"
    assert plan.repo is not None and plan.repo.distro == "ubuntu2204"
    assert plan.repo.keyring_url == (
        "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/"
        "cuda-keyring_1.1-1_all.deb"
    )
    assert plan.reboot.may_be_needed and not plan.reboot.allowed
    assert "reboot_allowed" in plan.reboot.reason


def test_hwe_kernel_gets_hwe_module_package() -> None:
    facts = _facts(JAMMY, "6.8.0-52-generic", RTX3070)
    assert ubuntu_kernel_flavour(facts) == "generic-hwe-22.04"
    assert _plan(facts).driver.packages[0] == "linux-modules-nvidia-580-open-generic-hwe-22.04"


def test_ubuntu_server_and_dkms_variants() -> None:
    facts = _facts(NOBLE, "6.8.0-90-generic", RTX3070)
    server = _plan(facts, driver_server=True, driver_branch=595)
    assert server.driver.packages == (
        "linux-modules-nvidia-595-server-open-generic", "nvidia-driver-595-server-open",
    )
    dkms = _plan(facts, driver_dkms=True)
    # the running kernel's headers, and the meta that brings the next kernel's
    assert dkms.driver.pre_packages == ("linux-headers-6.8.0-90-generic", "linux-headers-generic")
    assert dkms.driver.packages == ("nvidia-dkms-580-open", "nvidia-driver-580-open")
    # DKMS rebuilds for each new kernel: the kernel is not held
    assert dkms.driver.held == dkms.driver.packages


def test_ubuntu_2404_blackwell_needs_open_modules() -> None:
    plan = _plan(_facts(NOBLE, "6.8.0-90-generic", RTX5090))
    assert (plan.driver.branch, plan.driver.flavour) == (580, "open")
    with pytest.raises(PlanError, match="driver_flavour: Blackwell GPUs need the open"):
        _plan(_facts(NOBLE, "6.8.0-90-generic", RTX5090), driver_flavour="proprietary")
    with pytest.raises(PlanError, match="driver_branch: Blackwell GPUs need branch 570"):
        _plan(_facts(NOBLE, "6.8.0-90-generic", RTX5090), driver_branch=550,
              driver_source="cuda-repo")


def test_pascal_is_capped_at_580_proprietary_and_cuda_12() -> None:
    plan = _plan(_facts(NOBLE, "6.8.0-90-generic", GTX1080TI))
    assert (plan.driver.branch, plan.driver.flavour) == (580, "proprietary")
    assert plan.driver.packages[1] == "nvidia-driver-580"
    assert plan.toolkit.version == "12.9.1"  # CUDA 13 dropped Pascal
    with pytest.raises(PlanError, match="driver_branch: Pascal GPUs are supported up to"):
        _plan(_facts(NOBLE, "6.8.0-90-generic", GTX1080TI), driver_branch=595)
    with pytest.raises(PlanError, match=r"cuda_toolkit: CUDA 13\.0\.2 does not support"):
        _plan(_facts(NOBLE, "6.8.0-90-generic", GTX1080TI), cuda_toolkit="13.0")


def test_mixed_blackwell_and_pascal_cannot_share_a_module() -> None:
    with pytest.raises(PlanError, match="cannot drive both"):
        _plan(_facts(NOBLE, "6.8.0-90-generic", RTX5090, GTX1080TI))


def test_kepler_is_refused() -> None:
    with pytest.raises(PlanError, match="branch 470"):
        _plan(_facts(NOBLE, "6.8.0-90-generic", GK110))


def test_debian_12_turing_gets_nvidias_580_and_a_toolkit_the_repo_carries() -> None:
    plan = _plan(_facts(BOOKWORM, "6.1.0-28-amd64", GTX1650))
    assert (plan.driver.source, plan.driver.branch, plan.driver.flavour) == (
        "cuda-repo", 580, "open",
    )
    assert plan.driver.packages == ("nvidia-open-580",)
    assert (plan.toolkit.version, plan.repo and plan.repo.distro) == ("13.0.0", "debian12")


def test_debian_12_own_535_gets_no_toolkit_and_the_ways_out() -> None:
    plan = _plan(_facts(BOOKWORM, "6.1.0-28-amd64", GTX1650), driver_source="debian")
    assert (plan.driver.source, plan.driver.branch, plan.driver.flavour) == (
        "debian", 535, "proprietary",
    )
    assert plan.driver.pre_packages == ("linux-headers-amd64",)
    assert plan.driver.packages == ("nvidia-driver",)
    assert plan.driver.dkms
    assert plan.debian_components == ("main", "contrib", "non-free", "non-free-firmware")
    # Branch 535 runs CUDA 12.2 at most; NVIDIA's debian12 repository starts at 12.3.
    assert plan.toolkit.version is None and plan.repo is None
    assert "debian12 repository starts at CUDA 12.3" in plan.toolkit.reason
    assert "nvidia-cuda-toolkit" in plan.toolkit.reason
    assert "cuda_toolkit: none" in plan.toolkit.reason
    with pytest.raises(PlanError, match=r"cuda_toolkit: NVIDIA's debian12 repository has no "
                                        r"CUDA 12\.2\.2"):
        _plan(_facts(BOOKWORM, "6.1.0-28-amd64", GTX1650), driver_source="debian",
              cuda_toolkit="12.2")


@pytest.mark.parametrize("branch", [535, 550])
def test_ubuntu2404_repo_starts_at_12_5(branch: int) -> None:
    facts = _facts(NOBLE, "6.8.0-90-generic", RTX3070)
    plan = _plan(facts, driver_source="cuda-repo", driver_branch=branch)
    assert plan.toolkit.version is None
    assert "ubuntu2404 repository starts at CUDA 12.5" in plan.toolkit.reason
    # the same branch on 22.04, whose repository has every release gpulab offers
    jammy = _plan(_facts(JAMMY, "5.15.0-161-generic", RTX3070), driver_source="cuda-repo",
                  driver_branch=branch)
    assert jammy.toolkit.version == {535: "12.2.0", 550: "12.4.0"}[branch]


@pytest.mark.parametrize(
    ("branch", "words"),
    [
        (590, "carries branch 590 only as a transitional package that installs 595: set "
              "driver_branch: 595"),
        (570, "transitional package that installs 580"),
        (550, "transitional package that installs 580"),
        (560, "archive has no driver branch 560"),
        (610, "archive has no driver branch 610"),
    ],
)
def test_ubuntu_branches_the_archive_does_not_carry_are_refused(branch: int, words: str) -> None:
    for release, kernel in ((JAMMY, "5.15.0-161-generic"), (NOBLE, "6.8.0-90-generic")):
        with pytest.raises(PlanError, match="driver_branch: ") as error:
            _plan(_facts(release, kernel, RTX3070), driver_branch=branch)
        assert words in str(error.value) and "driver_source: cuda-repo" in str(error.value)
    # NVIDIA's repository has them under their own names
    assert _plan(_facts(NOBLE, "6.8.0-90-generic", RTX3070), driver_branch=branch,
                 driver_source="cuda-repo").driver.branch == branch


def test_ubuntu_archive_still_carries_the_long_term_535_branch() -> None:
    plan = _plan(_facts(NOBLE, "6.8.0-90-generic", RTX3070), driver_branch=535)
    assert plan.driver.branch == 535
    assert "nvidia-driver-535" in plan.driver.packages


def test_kernel_hold_opt_out_holds_nothing_and_says_so() -> None:
    plan = _plan(_facts(JAMMY, "6.8.0-52-generic", RTX3070), driver_hold_kernel=False)
    assert plan.driver.packages == ("linux-modules-nvidia-580-open-generic-hwe-22.04",
                                    "nvidia-driver-580-open")
    assert plan.driver.held == ()
    assert "nothing held (driver_hold_kernel: false)" in plan.driver.reason
    held = _plan(_facts(JAMMY, "6.8.0-52-generic", RTX3070))
    assert held.driver.held[2:] == ("linux-generic-hwe-22.04", "linux-image-generic-hwe-22.04",
                                    "linux-headers-generic-hwe-22.04")


def test_nvidia_repo_route_holds_the_installed_set() -> None:
    plan = _plan(_facts(NOBLE, "6.8.0-90-generic", RTX3070), driver_source="cuda-repo")
    assert plan.driver.hold_installed_set
    assert not _plan(_facts(NOBLE, "6.8.0-90-generic", RTX3070)).driver.hold_installed_set


def test_toolkit_reason_states_the_pin_is_to_the_minor_release() -> None:
    plan = _plan(_facts(NOBLE, "6.8.0-90-generic", RTX3070))
    assert plan.toolkit.version == "13.0.0"
    assert ("pinned to the 13.0 minor release: cuda-toolkit-13-0 stays at 13.0.0, its parts "
            "follow the newest 13.0 update") in plan.toolkit.reason


def test_debian_12_blackwell_goes_to_nvidias_repo() -> None:
    plan = _plan(_facts(BOOKWORM, "6.1.0-28-amd64", RTX5090))
    assert (plan.driver.source, plan.driver.branch) == ("cuda-repo", 580)
    assert plan.driver.packages == ("nvidia-open-580",)
    assert plan.debian_components == ("main", "contrib")


def test_cuda_repo_590_installs_the_pinning_package_first() -> None:
    plan = _plan(_facts(BOOKWORM, "6.1.0-28-amd64", GTX1650), driver_source="cuda-repo",
                 driver_branch=590)
    assert plan.driver.pre_packages == ("linux-headers-amd64", "nvidia-driver-pinning-590")
    assert plan.driver.packages == ("nvidia-open",)
    proprietary = _plan(_facts(BOOKWORM, "6.1.0-28-amd64", GTX1650), driver_source="cuda-repo",
                        driver_flavour="proprietary")
    assert proprietary.driver.packages == ("cuda-drivers-580",)


def test_debian_source_refuses_other_branches() -> None:
    with pytest.raises(PlanError, match="driver_branch: Debian 12 packages branch 535 only"):
        _plan(_facts(BOOKWORM, "6.1.0-28-amd64", GTX1650), driver_source="debian",
              driver_branch=580)


def test_wsl2_never_gets_a_driver_and_uses_the_windows_column() -> None:
    facts = HostFacts(
        hostname="lab-01", os=JAMMY, kernel="5.15.167.4-microsoft-standard-WSL2", wsl=True,
        wsl_systemd=True,
        smi=SmiStatus(exit_code=0, gpus=(SmiGpu(name="NVIDIA GeForce RTX 3050 Laptop GPU",
                                                driver_version="566.36",
                                                memory_total_mib=4096),)),
    )
    plan = _plan(facts)
    assert plan.platform == "wsl2-ubuntu-22.04"
    assert plan.driver.source is None and "Windows driver" in plan.driver.reason
    assert plan.toolkit.version == "12.6.3" and "Windows driver 566.36" in plan.toolkit.reason
    assert plan.repo is not None and plan.repo.distro == "wsl-ubuntu"
    assert not plan.reboot.may_be_needed and "wsl --shutdown" in plan.reboot.reason
    with pytest.raises(PlanError, match="driver_source: WSL2 uses the Windows driver"):
        _plan(facts, driver_source="ubuntu")


def test_wsl2_without_systemd_cannot_run_the_service_yet() -> None:
    facts = HostFacts(hostname="lab-01", os=NOBLE, kernel="6.6.87.2-microsoft-standard-WSL2",
                      wsl=True, wsl_systemd=False, systemd_running=False)
    plan = _plan(facts)
    assert not plan.ollama.service_can_run
    assert "wsl --shutdown" in plan.ollama.reason
    assert plan.toolkit.version is None  # no Windows driver visible


def test_no_gpu_gets_no_driver_and_no_toolkit() -> None:
    plan = _plan(_facts(BOOKWORM, "6.1.0-28-amd64"))
    assert plan.driver.source is None and "no NVIDIA GPU" in plan.driver.reason
    assert plan.toolkit.version is None and plan.repo is None
    assert plan.debian_components == ()
    assert not plan.ollama.after_nvidia
    pinned = _plan(_facts(BOOKWORM, "6.1.0-28-amd64"), cuda_toolkit="12.6.2")
    assert pinned.toolkit.package == "cuda-toolkit-12-6" and pinned.repo is not None


def test_pinned_toolkit_above_the_branch_is_refused() -> None:
    with pytest.raises(PlanError, match=r"cuda_toolkit: CUDA 13\.2\.2 needs driver 595\.71\.05"):
        _plan(_facts(JAMMY, "5.15.0-161-generic", RTX3070), cuda_toolkit="13.2")


def test_secure_boot_with_dkms_stops_before_installing() -> None:
    facts = _facts(BOOKWORM, "6.1.0-28-amd64", GTX1650, secure_boot="enabled")
    with pytest.raises(PlanError, match="driver_secure_boot_proceed: Secure Boot is on"):
        _plan(facts)
    assert _plan(facts, driver_secure_boot_proceed=True).driver.dkms


def test_driver_none_keeps_the_installed_driver_for_the_toolkit() -> None:
    facts = _facts(JAMMY, "5.15.0-161-generic", RTX3070, loaded_driver_version="560.35.03",
                   smi=SmiStatus(exit_code=0, gpus=(SmiGpu(
                       name="NVIDIA GeForce RTX 3070", driver_version="560.35.03",
                       memory_total_mib=8192),)))
    plan = _plan(facts, driver_source="none")
    assert plan.driver.source is None and plan.toolkit.version == "12.6.2"
    kept = _plan(facts, driver_branch=560, driver_source="cuda-repo")
    assert not kept.driver.changes and not kept.reboot.may_be_needed
    changed = _plan(facts)
    assert changed.driver.changes and "replaces branch 560" in changed.driver.reason


NVML_MISMATCH = SmiStatus(exit_code=18, message=recorded("smi-version-mismatch.txt").strip())
NOT_LOADED = SmiStatus(exit_code=9, message=recorded("smi-driver-not-loaded.txt").strip())


def test_nvml_mismatch_needs_a_reboot_and_names_both_versions() -> None:
    facts = _facts(NOBLE, "6.8.0-90-generic", RTX3070, smi=NVML_MISMATCH,
                   loaded_driver_version="580.82.07", driver_library_version="580.95.05")
    plan = _plan(facts)
    assert not plan.driver.changes  # the same branch: not a driver change
    assert plan.reboot.may_be_needed and plan.reboot.driver_stale and not plan.reboot.allowed
    assert "(module 580.82.07, library 580.95.05)" in plan.reboot.reason
    assert "Driver/library version mismatch" in plan.reboot.reason
    assert plan.reboot.reason.endswith("reboot it yourself (or set reboot_allowed: true)")
    assert _plan(facts, reboot_allowed=True).reboot.reason.endswith("rebooted by gpulab")


def test_installed_driver_without_a_loaded_module_needs_a_reboot() -> None:
    facts = _facts(NOBLE, "6.8.0-90-generic", RTX3070, smi=NOT_LOADED,
                   driver_library_version="580.95.05")
    plan = _plan(facts, reboot_allowed=True)
    assert plan.reboot.may_be_needed and plan.reboot.driver_stale
    assert "driver 580.95.05 is installed but no nvidia module is loaded" in plan.reboot.reason


def test_nvidia_smi_without_a_gpu_on_the_bus_is_not_a_stale_driver() -> None:
    plan = _plan(_facts(NOBLE, "6.8.0-90-generic", smi=NOT_LOADED,
                        driver_library_version="580.95.05"), reboot_allowed=True)
    assert not plan.reboot.may_be_needed and not plan.reboot.driver_stale


def test_reboot_allowed() -> None:
    plan = _plan(_facts(JAMMY, "5.15.0-161-generic", RTX3070), reboot_allowed=True)
    assert plan.reboot.may_be_needed and plan.reboot.allowed
    asked = _plan(_facts(BOOKWORM, "6.1.0-28-amd64", reboot_required=True))
    assert asked.reboot.may_be_needed and "requires one" in asked.reboot.reason


def test_models_fit_the_gpu_memory() -> None:
    def smi(mib: int) -> SmiStatus:
        return SmiStatus(exit_code=0, gpus=(SmiGpu(name="NVIDIA GeForce RTX 3070",
                                                  driver_version="580.95.05",
                                                  memory_total_mib=mib),))
    big = _plan(_facts(JAMMY, "5.15.0-161-generic", RTX3070, smi=smi(8192)))
    assert [fit.fits_gpu for fit in big.models] == [True, True]
    small = _plan(_facts(JAMMY, "5.15.0-161-generic", RTX3070, smi=smi(4096)))
    assert [fit.fits_gpu for fit in small.models] == [False, True]
    assert "partly on the CPU" in small.models[0].reason
    unknown = _plan(_facts(JAMMY, "5.15.0-161-generic", RTX3070), models=["llama3.2:1b"])
    assert unknown.models[0].fits_gpu is None


def test_ollama_exposure_is_in_the_plan() -> None:
    plan = _plan(_facts(BOOKWORM, "6.1.0-28-amd64"), ollama_host="0.0.0.0:11434",
                 ollama_allowed_clients=["10.0.0.0/24"])
    assert plan.ollama.exposed and plan.ollama.allowed_clients == ("10.0.0.0/24",)
    assert plan.ollama.listen_host == "0.0.0.0" and "10.0.0.0/24" in plan.ollama.reason


def test_hwe_dkms_headers_follow_the_hwe_kernel() -> None:
    plan = _plan(_facts(JAMMY, "6.8.0-52-generic", RTX3070), driver_dkms=True)
    assert plan.driver.pre_packages == (
        "linux-headers-6.8.0-52-generic", "linux-headers-generic-hwe-22.04",
    )


@pytest.mark.parametrize(
    ("os", "wsl"),
    [
        (OsInfo(id="debian", version_id="11", codename="bullseye"), False),
        (OsInfo(id="ubuntu", version_id="20.04", codename="focal"), False),
        (BOOKWORM, True),  # WSL2 gets the CUDA repo for Ubuntu only
    ],
)
def test_unsupported_platforms_are_refused(os: OsInfo, wsl: bool) -> None:
    with pytest.raises(PlanError, match=r"os: .* is not supported"):
        _plan(_facts(os, "5.10.0-28-amd64", GTX1650, wsl=wsl))


def test_secure_boot_message_names_the_key_dkms_will_create() -> None:
    with pytest.raises(PlanError, match=r"MOK\.der"):
        _plan(_facts(NOBLE, "6.8.0-90-generic", RTX3070, secure_boot="enabled"),
              driver_dkms=True)
    with pytest.raises(PlanError, match=r"/var/lib/dkms/mok\.pub"):
        _plan(_facts(BOOKWORM, "6.1.0-28-amd64", GTX1650, secure_boot="enabled"))


def test_wsl1_is_refused_with_the_command_that_converts_it() -> None:
    facts = HostFacts(hostname="lab-01", os=JAMMY, kernel="4.4.0-19041-Microsoft", wsl=True)
    with pytest.raises(PlanError, match="os: WSL1 has no GPU support"):
        _plan(facts)
