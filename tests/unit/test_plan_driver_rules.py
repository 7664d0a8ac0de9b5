"""Plan rules the driver and reboot deploys rely on (added with the NVIDIA deploys)."""

from __future__ import annotations

from typing import Any

import pytest

from gpulab.facts.model import HostFacts, OsInfo, PciGpu
from gpulab.plan.host import PlanError, make_plan
from gpulab.settings import parse_settings

pytestmark = pytest.mark.unit

NOBLE = OsInfo(id="ubuntu", version_id="24.04", codename="noble")
BOOKWORM = OsInfo(id="debian", version_id="12", codename="bookworm")
RTX3070 = PciGpu(slot="01:00.0", device_id="2484", name="GA104 [GeForce RTX 3070]")
GTX1650 = PciGpu(slot="01:00.0", device_id="1f82", name="TU117 [GeForce GTX 1650]")


def _plan(os: OsInfo, kernel: str, *gpus: PciGpu, **data: Any) -> Any:
    facts = HostFacts(hostname="lab-01", os=os, kernel=kernel, pci_gpus=gpus)
    return make_plan("lab-01", facts, parse_settings("lab-01", data))


@pytest.mark.parametrize("number", [535, 550])
def test_cuda_repo_proprietary_before_560_uses_cuda_drivers_nnn(number: int) -> None:
    # NVIDIA's repository has cuda-drivers-535 and -550 (reference §3b: up to 580), but no
    # nvidia-driver-pinning for them: the branch meta package is the way to stay in it.
    plan = _plan(NOBLE, "6.8.0-90-generic", RTX3070, driver_source="cuda-repo",
                 driver_branch=number)
    assert plan.driver.flavour == "proprietary"
    assert plan.driver.pre_packages == ("linux-headers-6.8.0-90-generic", "linux-headers-generic")
    assert plan.driver.packages == (f"cuda-drivers-{number}",)
    assert plan.driver.held == (f"cuda-drivers-{number}",)


def test_cuda_repo_open_before_560_is_refused_with_the_field() -> None:
    with pytest.raises(PlanError) as error:
        _plan(NOBLE, "6.8.0-90-generic", RTX3070, driver_source="cuda-repo",
              driver_branch=550, driver_flavour="open")
    assert error.value.field == "driver_flavour"
    assert "no nvidia-open-550" in error.value.message


def test_cuda_repo_580_and_590_names() -> None:
    plan = _plan(NOBLE, "6.8.0-90-generic", RTX3070, driver_source="cuda-repo")
    assert plan.driver.packages == ("nvidia-open-580",)
    plan = _plan(NOBLE, "6.8.0-90-generic", RTX3070, driver_source="cuda-repo",
                 driver_branch=590, driver_flavour="proprietary")
    assert plan.driver.pre_packages == ("linux-headers-6.8.0-90-generic", "linux-headers-generic",
                                        "nvidia-driver-pinning-590")
    assert plan.driver.packages == ("cuda-drivers",)
    assert plan.driver.held == ("nvidia-driver-pinning-590", "cuda-drivers")


def test_debian_plan_names_the_suite_whose_components_change() -> None:
    plan = _plan(BOOKWORM, "6.1.0-21-amd64", GTX1650, driver_source="debian")
    assert plan.debian_components == ("main", "contrib", "non-free", "non-free-firmware")
    assert plan.debian_codename == "bookworm"
    ubuntu = _plan(NOBLE, "6.8.0-90-generic", RTX3070)
    assert (ubuntu.debian_components, ubuntu.debian_codename) == ((), "")


def test_debian_cuda_repo_needs_contrib_only() -> None:
    plan = _plan(BOOKWORM, "6.1.0-21-amd64", GTX1650, driver_source="cuda-repo")
    assert plan.debian_components == ("main", "contrib")
    assert plan.debian_codename == "bookworm"
    assert plan.driver.pre_packages == ("linux-headers-amd64",)
    assert plan.driver.packages == ("nvidia-open-580",)


def test_no_gpu_reboot_reason_does_not_claim_a_loaded_driver() -> None:
    plan = _plan(BOOKWORM, "6.1.0-21-amd64")
    assert not plan.reboot.may_be_needed
    assert plan.reboot.reason == "no driver change and no reboot required"
