"""Pure helpers for the NVIDIA driver and CUDA deploys: file texts and failure diagnosis.

No pyinfra here: the deploys render these texts and run the commands; unit tests feed the
functions recorded outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpulab.facts.nvidia import (
    LOADED_MODULE_COMMAND,
    NVML_LIBRARY_COMMAND,
    parse_driver_library_version,
    parse_nvidia_module_version,
)
from gpulab.facts.secure_boot import parse_secure_boot

# unattended-upgrades reads Package-Blacklist entries as Python regular expressions matched
# from the start of the package name. These cover every driver package name NVIDIA and the
# distributions use, so a nightly unattended run never moves the driver away from what the
# loaded kernel module matches (the "Driver/library version mismatch" classroom morning).
DRIVER_BLACKLIST_PATTERNS: tuple[str, ...] = (
    "nvidia-",
    "libnvidia-",
    "linux-modules-nvidia-",
    "linux-objects-nvidia-",
    "linux-signatures-nvidia-",
    "cuda-drivers",
    "xserver-xorg-video-nvidia",
    "firmware-nvidia-",
)

# The driver's own top-level packages, as gpulab holds them on some branch (Ubuntu, NVIDIA's
# repo, Debian), and the Ubuntu kernel flavour metas held with Canonical's prebuilt modules.
# Other held nvidia-* packages (nvidia-container-toolkit) are the user's.
DRIVER_HOLD_NAMES = re.compile(
    r"^(nvidia-driver(-\d+.*)?|nvidia-open(-\d+)?|nvidia-driver-pinning-\d+|nvidia-dkms-\d+.*"
    r"|nvidia-kernel-dkms|cuda-drivers(-\d+)?|linux-modules-nvidia-\d+.*"
    r"|linux-(image-|headers-)?(generic|lowlatency)(-hwe-\d+\.\d+)?)$"
)

# The installed packages of one driver branch on NVIDIA's repository: the driver's names
# whose version is the branch's (so nvidia-container-toolkit, 1.x, is never among them).
# One pattern for Python's re and awk's ERE alike.
DRIVER_SET_NAMES = r"^(lib)?nvidia-|^cuda-drivers|^xserver-xorg-video-nvidia|^firmware-nvidia"


def installed_driver_set(branch: int) -> str:
    """A shell command listing the installed packages of driver ``branch``, one a line.

    NVIDIA's metas (``cuda-drivers-580``, ``nvidia-open-580``) depend with ">=" on
    ``nvidia-driver``, ``nvidia-kernel-dkms``...: holding the metas alone lets ``apt upgrade``
    move the driver under the loaded module (the Depends of cuda-drivers-580, quoted in
    https://forums.developer.nvidia.com/t/debian-cuda-drivers-580-package-580-105-08-1-improperly-pulls-in-v590-components/353805).
    """
    return (
        "dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\\n' 2>/dev/null | "
        f"awk '$1 == \"ii\" && $3 ~ /^{branch}[.]/ && $2 ~ /{DRIVER_SET_NAMES}/ "
        "{ print $2 }'"
    )

# Packages that install a Linux driver and so must never reach a WSL2 distribution
# (CUDA on WSL User Guide, section 4); an apt pin of -1 makes apt refuse them outright.
# Ubuntu's libcudart12 recommends libnvidia-compute-NNN, whose Linux libcuda.so would shadow
# the Windows driver's /usr/lib/wsl/lib/libcuda.so; nvidia-utils-NNN brings a Linux nvidia-smi.
WSL_FORBIDDEN_REGEX = (
    r"/^(cuda|cuda-[0-9]+-[0-9]+|cuda-drivers(-[0-9]+)?|cuda-runtime-[0-9]+-[0-9]+"
    r"|nvidia-driver(-.*)?|nvidia-open(-.*)?|nvidia-dkms-.*|nvidia-kernel-.*"
    r"|libnvidia-compute(-.*)?|nvidia-utils(-.*)?)$/"
)


def blacklist_patterns(held: tuple[str, ...] | list[str]) -> list[str]:
    """Package-Blacklist entries: each held package exactly, then every driver name prefix.

    >>> blacklist_patterns(["nvidia-driver"])[:2]
    ['^nvidia-driver$', 'nvidia-']
    """
    # "." and "+" as character classes: apt.conf strings must not carry backslashes.
    exact = [name.replace(".", "[.]").replace("+", "[+]") for name in held]
    return [f"^{name}$" for name in exact] + list(DRIVER_BLACKLIST_PATTERNS)


def version_matches(installed: list[str] | tuple[str, ...], apt_version: str) -> bool:
    """Whether an installed version matches an apt version glob such as ``12.6.2-*``.

    >>> version_matches(["12.6.2-1"], "12.6.2-*"), version_matches(["12.6.3-1"], "12.6.2-*")
    (True, False)
    """
    pattern = re.escape(apt_version).replace(r"\*", ".*")
    return any(re.fullmatch(pattern, version) for version in installed)


# --------------------------------------------------------------------------------------------
# After the reboot: does the driver load, and if not, why
# --------------------------------------------------------------------------------------------

# The diagnostic script prints these sections; each is parsed on its own.
CHECK_SECTIONS = ("smi", "sb", "lsmod", "module", "library", "dkms", "kernel", "headers",
                  "journal")


def check_script() -> str:
    """One POSIX sh script printing everything the diagnosis needs, in marked sections.

    Always exits 0: its output is the verdict's input, not the verdict.
    """
    return (
        "echo '== smi'; if command -v nvidia-smi >/dev/null 2>&1; then "
        "timeout 60 nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1; "
        "echo \"exit=$?\"; else echo 'exit=127'; fi; "
        "echo '== sb'; mokutil --sb-state 2>&1 || true; "
        "echo '== lsmod'; lsmod 2>/dev/null | grep -E '^(nvidia|nouveau)' || true; "
        f"echo '== module'; {LOADED_MODULE_COMMAND}; "
        f"echo '== library'; {NVML_LIBRARY_COMMAND}; "
        "echo '== dkms'; dkms status 2>&1 || true; "
        "echo '== kernel'; uname -r; "
        "echo '== headers'; if [ -e \"/lib/modules/$(uname -r)/build\" ]; then echo present; "
        "else echo missing; fi; "
        "echo '== journal'; journalctl -k -b --no-pager 2>/dev/null "
        "| grep -iE 'nvidia|nouveau|module verification|key was rejected|lockdown|"
        "unsigned module' | tail -n 40 || true"
    )


@dataclass(frozen=True)
class DriverCheck:
    """The parsed output of :func:`check_script`."""

    smi_exit: int
    smi_output: str
    secure_boot: bool
    lsmod: str
    module_version: str | None  # the loaded nvidia module's
    library_version: str | None  # the installed NVML library's
    dkms: str
    kernel: str
    headers: bool  # /lib/modules/<running kernel>/build exists
    journal: str


def parse_check(text: str) -> DriverCheck:
    """Split :func:`check_script`'s output into its sections.

    >>> parse_check("== smi\\nGPU, 580.95.05\\nexit=0\\n== kernel\\n6.1.0-1-amd64").smi_exit
    0
    """
    sections: dict[str, list[str]] = {name: [] for name in CHECK_SECTIONS}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("== ") and line[3:].strip() in sections:
            current = sections[line[3:].strip()]
        elif current is not None:
            current.append(line)
    smi_lines = sections["smi"]
    exit_code = 255
    if smi_lines and (m := re.fullmatch(r"exit=(\d+)", smi_lines[-1].strip())):
        exit_code = int(m[1])
        smi_lines = smi_lines[:-1]
    return DriverCheck(
        smi_exit=exit_code,
        smi_output="\n".join(smi_lines).strip(),
        # The facts' parser: "SecureBoot enabled" with shim validation off is disabled.
        secure_boot=parse_secure_boot("\n".join(sections["sb"])) == "enabled",
        lsmod="\n".join(sections["lsmod"]),
        module_version=parse_nvidia_module_version("\n".join(sections["module"])),
        library_version=parse_driver_library_version("\n".join(sections["library"])),
        dkms="\n".join(sections["dkms"]),
        kernel="\n".join(sections["kernel"]).strip(),
        headers="present" in sections["headers"],
        journal="\n".join(sections["journal"]),
    )


# Ubuntu's DKMS signs with shim-signed's MOK; other distributions' DKMS with its own default.
UBUNTU_DKMS_KEY = "/var/lib/shim-signed/mok/MOK.der"
DKMS_DEFAULT_KEY = "/var/lib/dkms/mok.pub"

# Not "module verification failed": the kernel prints that when enforcement is off too, and
# then loads the module anyway (it only taints the kernel).
_KEY_REJECTED = re.compile(
    r"key was rejected by service|loading of unsigned module is rejected|"
    r"lockdown: .*unsigned module",
    re.IGNORECASE,
)


def diagnose(check: DriverCheck, mok_key: str | None) -> str | None:
    """Why the driver does not run, as one message for the user; None when nvidia-smi works.

    ``mok_key`` is the certificate DKMS signs with (None: the modules are not DKMS-built).
    Order matters: a module the firmware rejected also leaves nouveau unloaded and DKMS
    "installed", so Secure Boot is looked at first.

    >>> ok = DriverCheck(0, "RTX 3070, 580.95.05", False, "nvidia 1 0", "580.95.05",
    ...                  "580.95.05", "", "6.8.0-1", True, "")
    >>> diagnose(ok, mok_key=None) is None
    True
    """
    if check.smi_exit == 0:
        return None
    nvidia_loaded = re.search(r"^nvidia\s", check.lsmod, re.MULTILINE) is not None
    dkms_expected = mok_key is not None
    if check.smi_exit == 127:
        return ("nvidia-smi is not installed after the reboot: the driver packages did not "
                "install their utilities; check `apt-get install` output for this host")
    if _KEY_REJECTED.search(check.journal) or (
        check.secure_boot and not nvidia_loaded and dkms_expected and _dkms_installed(check)
    ):
        return ("Secure Boot rejected the nvidia kernel module (it is not signed by a key the "
                f"firmware trusts): enroll the DKMS key with `mokutil --import {mok_key}`, "
                "reboot and choose Enroll MOK"
                + (", or use Ubuntu's prebuilt signed modules (driver_dkms: false)"
                   if mok_key == UBUNTU_DKMS_KEY else ""))
    if re.search(r"^nouveau\s", check.lsmod, re.MULTILINE):
        return ("nouveau is still loaded, so the nvidia module cannot bind the GPU: the "
                "driver's nouveau blacklist is not in the initramfs yet; run "
                "`update-initramfs -u` and reboot again")
    if dkms_expected and not _dkms_installed(check):
        if not check.headers:
            return (f"no kernel headers for the running kernel {check.kernel}, so DKMS could "
                    f"not build the nvidia module: install linux-headers-{check.kernel} (the "
                    "headers meta package may follow a newer kernel than the one booted)")
        detail = check.dkms.strip() or "no nvidia module in `dkms status`"
        return (f"the DKMS build of the nvidia module failed for kernel {check.kernel} "
                f"({detail}): see /var/lib/dkms/nvidia*/*/build/make.log")
    if check.smi_exit == 18 or "version mismatch" in check.smi_output.lower():
        return (f"the nvidia module loaded at boot ({check.module_version or 'unknown'}) is not "
                f"the installed driver ({check.library_version or 'unknown'}): kernel "
                f"{check.kernel} has an older module than the libraries. "
                + ("Run `dkms autoinstall -k " + check.kernel + "`" if dkms_expected else
                   f"Install the module package of {check.kernel} at the driver's release "
                   "(run gpulab with driver_upgrade: true, which moves kernel, modules and "
                   "driver together)")
                + ", then `update-initramfs -u` and reboot")
    if not nvidia_loaded:
        fix = ("`dkms status` and `modprobe nvidia` show why" if dkms_expected else
               f"Canonical's module package for kernel {check.kernel} is missing (the kernel "
               "moved without it): run gpulab with driver_upgrade: true, or boot the previous "
               "kernel; `modprobe nvidia` shows the error")
        driver = f"the driver {check.library_version}" if check.library_version else "the driver"
        return (f"{driver} is installed but no nvidia module is loaded on kernel "
                f"{check.kernel}: {fix}")
    first = check.smi_output.splitlines()[0] if check.smi_output else "no output"
    return f"nvidia-smi exited {check.smi_exit} after the reboot: {first}"


def _dkms_installed(check: DriverCheck) -> bool:
    """An nvidia DKMS module is installed for the running kernel (``dkms status``)."""
    for line in check.dkms.splitlines():
        if line.lower().startswith("nvidia") and check.kernel in line and "installed" in line:
            return True
    return False
