"""After a reboot: the driver check's parsing and its distinct failure messages.

Inputs are assembled from recorded outputs (``tests/data/recorded/``, the reference's
``driver-version.md``) the way ``check_script()`` prints them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpulab.deploys.reboot import connector_refusal
from gpulab.plan.driver import (
    DKMS_DEFAULT_KEY,
    UBUNTU_DKMS_KEY,
    WSL_FORBIDDEN_REGEX,
    blacklist_patterns,
    check_script,
    diagnose,
    installed_driver_set,
    parse_check,
)
from tests.recorded import recorded

pytestmark = pytest.mark.unit

KERNEL = "6.1.0-21-amd64"


def output(smi: str, smi_exit: int, sb: str = "SecureBoot disabled", lsmod: str = "",
           dkms: str = "", headers: str = "present", journal: str = "", module: str = "",
           library: str = "") -> str:
    return "\n".join([
        "== smi", smi, f"exit={smi_exit}", "== sb", sb, "== lsmod", lsmod, "== module", module,
        "== library", library, "== dkms", dkms, "== kernel", KERNEL, "== headers", headers,
        "== journal", journal,
    ])


NOT_LOADED = recorded("smi-driver-not-loaded.txt").rstrip("\n")
DKMS_OK = f"nvidia-current/535.309.01, {KERNEL}, x86_64: installed"


def test_working_driver_passes() -> None:
    check = parse_check(output("NVIDIA GeForce GTX 1650, 535.309.01", 0,
                               lsmod="nvidia 56823808 0", dkms=DKMS_OK))
    assert check.smi_exit == 0 and check.smi_output == "NVIDIA GeForce GTX 1650, 535.309.01"
    assert diagnose(check, mok_key=DKMS_DEFAULT_KEY) is None


def test_secure_boot_rejecting_the_module() -> None:
    journal = "kernel: Loading of unsigned module is rejected"
    check = parse_check(output(NOT_LOADED, 9, sb=recorded("mokutil-enabled.txt"),
                               dkms=DKMS_OK, journal=journal))
    assert check.secure_boot
    message = diagnose(check, mok_key=DKMS_DEFAULT_KEY)
    assert message is not None and message.startswith("Secure Boot rejected the nvidia")
    assert "mokutil --import /var/lib/dkms/mok.pub" in message


def test_secure_boot_on_with_a_built_but_unloaded_module_without_journal() -> None:
    check = parse_check(output(NOT_LOADED, 9, sb=recorded("mokutil-enabled.txt"), dkms=DKMS_OK))
    assert (diagnose(check, mok_key=DKMS_DEFAULT_KEY) or "").startswith("Secure Boot rejected")


def test_nouveau_still_loaded() -> None:
    check = parse_check(output(NOT_LOADED, 9, lsmod="nouveau 2433024 1", dkms=DKMS_OK))
    message = diagnose(check, mok_key=DKMS_DEFAULT_KEY)
    assert message is not None and message.startswith("nouveau is still loaded")
    assert "update-initramfs -u" in message


def test_missing_headers() -> None:
    check = parse_check(output(NOT_LOADED, 9, dkms="", headers="missing"))
    message = diagnose(check, mok_key=DKMS_DEFAULT_KEY)
    assert message is not None
    assert message.startswith(f"no kernel headers for the running kernel {KERNEL}")
    assert f"linux-headers-{KERNEL}" in message


def test_dkms_build_failure_with_headers_present() -> None:
    # dkms status after a failed build (reference: Debian 12.5, nvidia-current 535.161.08)
    dkms = "nvidia-current/535.161.08: added"
    check = parse_check(output(NOT_LOADED, 9, dkms=dkms))
    message = diagnose(check, mok_key=DKMS_DEFAULT_KEY)
    assert message is not None and message.startswith("the DKMS build of the nvidia module failed")
    assert "make.log" in message and dkms in message


def test_dkms_2x_status_format_counts_as_installed() -> None:
    dkms = f"nvidia, 460.91.03, {KERNEL}, x86_64: installed"
    check = parse_check(output(NOT_LOADED, 9, dkms=dkms))
    message = diagnose(check, mok_key=DKMS_DEFAULT_KEY)
    # installed for this kernel, so not a build failure: the module just is not loaded
    assert message == (f"the driver is installed but no nvidia module is loaded on kernel "
                       f"{KERNEL}: `dkms status` and `modprobe nvidia` show why")


def test_version_mismatch_after_the_reboot_names_both_versions_and_the_fix() -> None:
    # Ubuntu prebuilt modules: the booted kernel's module package is older than the driver.
    check = parse_check(output(recorded("smi-version-mismatch.txt"), 18, lsmod="nvidia 1 0",
                               dkms=DKMS_OK, module="580.82.07",
                               library="/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05"))
    assert (check.module_version, check.library_version) == ("580.82.07", "580.95.05")
    message = diagnose(check, mok_key=None) or ""
    assert message.startswith("the nvidia module loaded at boot (580.82.07) is not the "
                              "installed driver (580.95.05)")
    assert "driver_upgrade: true" in message and "update-initramfs -u" in message
    dkms = diagnose(check, mok_key=DKMS_DEFAULT_KEY) or ""
    assert f"dkms autoinstall -k {KERNEL}" in dkms


def test_prebuilt_module_missing_for_the_new_kernel() -> None:
    check = parse_check(output(NOT_LOADED, 9,
                               library="/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05"))
    message = diagnose(check, mok_key=None) or ""
    assert message.startswith("the driver 580.95.05 is installed but no nvidia module is loaded")
    assert "module package for kernel" in message and "driver_upgrade: true" in message


def test_ubuntu_dkms_key_is_shim_signed_mok() -> None:
    journal = "kernel: Loading of unsigned module is rejected"
    check = parse_check(output(NOT_LOADED, 9, sb=recorded("mokutil-enabled.txt"),
                               dkms=DKMS_OK, journal=journal))
    message = diagnose(check, mok_key=UBUNTU_DKMS_KEY) or ""
    assert "mokutil --import /var/lib/shim-signed/mok/MOK.der" in message
    assert "/var/lib/dkms" not in message
    assert "driver_dkms: false" in message  # Ubuntu has the prebuilt signed modules


def test_secure_boot_with_shim_validation_off_is_not_enabled() -> None:
    # "SecureBoot enabled" is printed too, but the kernel loads unsigned modules.
    shim_off = recorded("mokutil-enabled-shim-validation-off.txt")
    check = parse_check(output(NOT_LOADED, 9, sb=shim_off, dkms=DKMS_OK))
    assert not check.secure_boot
    assert not (diagnose(check, mok_key=DKMS_DEFAULT_KEY) or "").startswith("Secure Boot")


def test_check_script_runs_under_sh_here_and_parses() -> None:
    # Whatever this machine has, the script exits 0; without a driver it says so.
    done = subprocess.run(["sh", "-c", check_script()], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0
    check = parse_check(done.stdout)
    assert check.kernel == subprocess.run(["uname", "-r"], capture_output=True, text=True,
                                          check=True).stdout.strip()
    if shutil.which("nvidia-smi") is None:
        assert check.smi_exit == 127
        assert (diagnose(check, mok_key=None) or "").startswith(
            "nvidia-smi is not installed")


def test_blacklist_patterns_need_no_backslashes() -> None:
    assert blacklist_patterns(["libnvidia-gl-535", "foo.bar+1"])[:2] == [
        "^libnvidia-gl-535$", "^foo[.]bar[+]1$",
    ]


def test_reboot_never_targets_local_or_chroot() -> None:
    from pyinfra.connectors.chroot import ChrootConnector
    from pyinfra.connectors.local import LocalConnector
    from pyinfra.connectors.ssh import SSHConnector

    assert connector_refusal(LocalConnector) == "@local is the machine pyinfra runs on"
    assert connector_refusal(ChrootConnector) == "@chroot is a directory, not a machine"
    assert connector_refusal(SSHConnector) is None


@pytest.mark.parametrize(
    ("package", "refused"),
    [
        # Ubuntu's libcudart12 recommends libnvidia-compute-580: a Linux libcuda in WSL.
        ("libnvidia-compute-580", True), ("libnvidia-compute", True),
        ("nvidia-utils-580", True), ("nvidia-utils-580-server", True),
        ("cuda-drivers-580", True), ("nvidia-driver-580-open", True), ("cuda-12-6", True),
        # what WSL2 does need: the toolkit and the container toolkit
        ("cuda-toolkit-12-6", False), ("libnvidia-container1", False),
        ("nvidia-container-toolkit", False), ("libcudart12", False),
    ],
)
def test_wsl_refusal_pin(package: str, refused: bool) -> None:
    pattern = WSL_FORBIDDEN_REGEX.strip("/")  # apt's /regex/ form
    assert (re.fullmatch(pattern, package) is not None) == refused


def _depends(field: str) -> list[tuple[str, str]]:
    """``Depends: a (>= 1), b`` -> [("a", ">= 1"), ("b", "")]."""
    relations = field.removeprefix("Depends:").split(",")
    found = [re.fullmatch(r"\s*(\S+)\s*(?:\((.*)\))?\s*", relation) for relation in relations]
    return [(m[1], m[2] or "") for m in found if m]


def test_the_branch_set_covers_what_cuda_drivers_580_depends_on(tmp_path: Path) -> None:
    depends = _depends(recorded("apt-depends-cuda-drivers-580-debian12.txt").strip())
    # ">=" lets apt bring any newer driver under the held meta: the parts must be held too
    assert all(relation.startswith(">=") for _, relation in depends)
    # dpkg-query as the host answers it: the meta, its parts, and a package not the driver's
    installed = [f"ii {name} 580.105.08-1" for name, _ in depends]
    installed += ["ii cuda-drivers-580 580.105.08-1", "ii nvidia-container-toolkit 1.17.8-1",
                  "rc nvidia-driver-535 535.247.01-1", "ii nvidia-kernel-dkms-590 590.48.01-1"]
    stub = tmp_path / "dpkg-query"
    stub.write_text("#!/bin/sh\nprintf '%s\\n' " + " ".join(f"'{line}'" for line in installed)
                    + "\n")
    stub.chmod(0o755)
    done = subprocess.run(["sh", "-c", installed_driver_set(580)], capture_output=True,
                          text=True, check=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert sorted(done.stdout.split()) == sorted(["cuda-drivers-580", *(n for n, _ in depends)])
