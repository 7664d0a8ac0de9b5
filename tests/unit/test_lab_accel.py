"""KVM only where it boots a stock kernel; TCG everywhere else, with the reason."""

from __future__ import annotations

import pytest

from gpulab.lab.accel import Accel, choose_accel

pytestmark = pytest.mark.unit


def test_real_kvm() -> None:
    assert choose_accel(True, True, {"kvm", "kvm_intel"}, {"vmx", "sse2"}).name == "kvm"
    assert choose_accel(True, True, {"kvm", "kvm_amd"}, {"svm"}).name == "kvm"


def test_kvm_pvm_means_tcg() -> None:
    a = choose_accel(True, True, {"kvm", "kvm_pvm"}, {"sse2"})
    assert a == Accel("tcg", "kvm_pvm hypervisor cannot boot a stock Debian kernel")


def test_pvm_wins_even_with_vmx_flag() -> None:
    assert choose_accel(True, True, {"kvm_pvm"}, {"vmx"}).name == "tcg"


@pytest.mark.parametrize(
    ("dev", "usable", "flags", "reason"),
    [
        (False, False, {"vmx"}, "no /dev/kvm"),
        (True, False, {"vmx"}, "/dev/kvm is not readable and writable by this user"),
        (True, True, {"sse2"}, "CPU has no vmx/svm flag"),
    ],
)
def test_tcg_reasons(dev: bool, usable: bool, flags: set[str], reason: str) -> None:
    assert choose_accel(dev, usable, {"kvm"}, flags) == Accel("tcg", reason)


def test_override() -> None:
    assert choose_accel(False, False, set(), set(), override="kvm").name == "kvm"
    assert choose_accel(True, True, {"kvm"}, {"vmx"}, override="tcg").name == "tcg"
    assert choose_accel(True, True, {"kvm"}, {"vmx"}, override="bogus").name == "kvm"
