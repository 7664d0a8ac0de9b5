"""Every compatibility table gpulab decides from, as data, in one place.

Sources: Table 3 of the CUDA Toolkit Release Notes
(https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/; the 13.2.2 and 13.1.0 editions agree
on every shared row), the CUDA minor-version compatibility guide
(https://docs.nvidia.com/deploy/cuda-compatibility/), NVIDIA's "CUDA Toolkit, Driver, and
Architecture Matrix" and the open kernel module rules of the driver README
(https://download.nvidia.com/XFree86/Linux-x86_64/latest/README/kernel_open.html).
"""

from __future__ import annotations

from typing import NamedTuple


class ToolkitRow(NamedTuple):
    """One CUDA toolkit release and the driver it needs ("Toolkit Driver Version")."""

    version: str
    linux_min: str
    windows_min: str | None  # None: Table 3 prints N/A (every 13.x row)


# Table 3, newest first. 12.3.2, 12.8.2, 12.9.2, 13.0.3 and 13.1.2 exist but are not in
# Table 3, so they are not offered: a minimum we cannot cite is not a minimum.
CUDA_TOOLKITS: tuple[ToolkitRow, ...] = (
    ToolkitRow("13.2.2", "595.71.05", None),
    ToolkitRow("13.2.1", "595.58.03", None),
    ToolkitRow("13.2.0", "595.45.04", None),
    ToolkitRow("13.1.1", "590.48.01", None),
    ToolkitRow("13.1.0", "590.44.01", None),
    ToolkitRow("13.0.2", "580.95.05", None),
    ToolkitRow("13.0.1", "580.82.07", None),
    ToolkitRow("13.0.0", "580.65.06", None),
    ToolkitRow("12.9.1", "575.57.08", "576.57"),
    ToolkitRow("12.9.0", "575.51.03", "576.02"),
    ToolkitRow("12.8.1", "570.124.06", "572.61"),
    ToolkitRow("12.8.0", "570.26", "570.65"),
    ToolkitRow("12.6.3", "560.35.05", "561.17"),
    ToolkitRow("12.6.2", "560.35.03", "560.94"),
    ToolkitRow("12.6.1", "560.35.03", "560.94"),
    ToolkitRow("12.6.0", "560.28.03", "560.76"),
    ToolkitRow("12.5.1", "555.42.06", "555.85"),
    ToolkitRow("12.5.0", "555.42.02", "555.85"),
    ToolkitRow("12.4.1", "550.54.15", "551.78"),
    ToolkitRow("12.4.0", "550.54.14", "551.61"),
    ToolkitRow("12.3.1", "545.23.08", "546.12"),
    ToolkitRow("12.3.0", "545.23.06", "545.84"),
    ToolkitRow("12.2.2", "535.104.05", "537.13"),
    ToolkitRow("12.2.1", "535.86.09", "536.67"),
    ToolkitRow("12.2.0", "535.54.03", "536.25"),
    ToolkitRow("12.1.1", "530.30.02", "531.14"),
    ToolkitRow("12.1.0", "530.30.02", "531.14"),
    ToolkitRow("12.0.1", "525.85.12", "528.33"),
    ToolkitRow("12.0.0", "525.60.13", "527.41"),
    ToolkitRow("11.8.0", "520.61.05", "520.06"),
)


class MinorVersionFloor(NamedTuple):
    """The oldest driver that runs any toolkit of a CUDA major (limited feature set)."""

    major: int
    linux_min: str
    windows_min: str | None


# Minor-version compatibility (13.x notes Table 2 + the compatibility guide). The exact
# Windows floor for 13.x is not published; NVIDIA states the ">= 580" class only.
MINOR_VERSION_FLOORS: tuple[MinorVersionFloor, ...] = (
    MinorVersionFloor(13, "580.65.06", "580"),
    MinorVersionFloor(12, "525.60.13", "527.41"),
    MinorVersionFloor(11, "450.80.02", "452.39"),
)


class Family(NamedTuple):
    """A GPU architecture and what it allows."""

    name: str
    chip_prefixes: tuple[str, ...]  # lspci prints the chip first: "GA102 [GeForce RTX 3090]"
    open_modules: str  # "required" | "supported" | "unsupported"
    min_branch: int  # oldest branch gpulab installs for it
    last_branch: int | None  # None: still supported by new branches
    last_cuda_major: int | None  # None: supported by the newest CUDA


# The matrix's rows (Kepler left out: it ended at R470 and CUDA 11, gpulab installs neither).
# Blackwell needs R570+ and the open modules; Maxwell/Pascal/Volta end at R580 and CUDA 12.x
# and cannot use the open modules (Turing and newer only).
FAMILIES: tuple[Family, ...] = (
    Family("Blackwell", ("GB",), "required", 570, None, None),
    Family("Hopper", ("GH",), "supported", 535, None, None),
    Family("Ada", ("AD",), "supported", 535, None, None),
    Family("Ampere", ("GA",), "supported", 535, None, None),
    Family("Turing", ("TU",), "supported", 535, None, None),
    Family("Volta", ("GV",), "unsupported", 535, 580, 12),
    Family("Pascal", ("GP",), "unsupported", 535, 580, 12),
    Family("Maxwell", ("GM",), "unsupported", 535, 580, 12),
    Family("Kepler", ("GK",), "unsupported", 470, 470, 11),
)

# PCI device-id ranges per family, for hosts whose lspci prints no chip name (old pci.ids).
# Ranges follow NVIDIA's device-id allocation per chip generation.
DEVICE_ID_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0FC0, 0x12FF, "Kepler"),
    # GM107/108/200/204/206, around GP100's 0x15F0-0x15FF (Tesla P100 is 0x15F7-0x15F9);
    # the ranges never overlap, so their order does not matter.
    (0x1340, 0x15EF, "Maxwell"),
    (0x15F0, 0x15FF, "Pascal"),
    (0x1600, 0x17FF, "Maxwell"),
    (0x1B00, 0x1D7F, "Pascal"),
    (0x1D80, 0x1DFF, "Volta"),
    (0x1E00, 0x1FFF, "Turing"),
    (0x2000, 0x20FF, "Ampere"),
    (0x2100, 0x21FF, "Turing"),
    (0x2200, 0x22FF, "Ampere"),
    (0x2300, 0x23FF, "Hopper"),
    (0x2400, 0x25FF, "Ampere"),
    (0x2600, 0x28FF, "Ada"),
    (0x2900, 0x2FFF, "Blackwell"),
)

# Marketing names, for nvidia-smi's GPU name when no PCI facts exist (WSL2). GeForce
# Blackwell is RTX 5050-5090 only: "Quadro RTX 5000" is Turing, "RTX 5000 Ada" is Ada.
# "GTX TITAN X" is Maxwell (GM200); the Pascal ones are "TITAN X (Pascal)" and "TITAN Xp".
NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"RTX 50[5-9]0\b|RTX PRO \d+ Blackwell|\bB[23]00\b|\bGB\d{2,3}\b", "Blackwell"),
    (r"\bH[12]00\b|\bH20\b|\bGH200\b", "Hopper"),
    (r"RTX 40\d0|\bL4\b|\bL40S?\b|RTX \d+ Ada", "Ada"),
    (r"RTX 30\d0|\bA\d{1,4}\b|RTX A\d{4}", "Ampere"),
    (r"RTX 20\d0|GTX 16\d0|\bT4\b|Quadro RTX|TITAN RTX", "Turing"),
    (r"\bV100\b|TITAN V\b", "Volta"),
    (r"GTX 10\d0|\bP\d{1,3}\b|\bP\d{4}\b|TITAN Xp\b|TITAN X \(Pascal\)", "Pascal"),
    (r"GTX 9\d0|GTX 7[45]0|\bM\d{2,4}\b|GTX TITAN X\b", "Maxwell"),
)


class Branch(NamedTuple):
    """A driver branch gpulab can install, with the first release of the branch.

    The first release is what the toolkit is chosen for when gpulab installs the branch, so
    the choice does not move when apt brings a newer point release later.
    """

    number: int
    first_release: str


BRANCHES: tuple[Branch, ...] = (
    Branch(535, "535.54.03"),
    Branch(550, "550.54.14"),
    Branch(560, "560.28.03"),
    Branch(565, "565.57.01"),
    Branch(570, "570.26"),
    Branch(575, "575.51.03"),
    Branch(580, "580.65.06"),
    Branch(590, "590.44.01"),
    Branch(595, "595.45.04"),
    Branch(610, "610.43.02"),
)

# NVIDIA's CUDA repository names its driver metas by branch up to R580 (cuda-drivers-NNN
# from the oldest branch, nvidia-open-NNN from R560); from R590 the names are unsuffixed and
# nvidia-driver-pinning-NNN, installed first, holds the branch.
CUDA_REPO_LAST_SUFFIXED_BRANCH = 580
CUDA_REPO_FIRST_OPEN_BRANCH = 560

# The branch installed when the data names none: R580 is an LTSB (until June 2028), drives
# every family from Maxwell to Blackwell and runs CUDA 13.0.
DEFAULT_BRANCH = 580

# Debian 12's own non-free `nvidia-driver` is the 535 branch (535.x~deb12u1).
DEBIAN_DISTRO_BRANCH = 535

# The oldest CUDA minor release each NVIDIA repository distro carries as cuda-toolkit-X-Y
# (every later one up to the newest is there too). A distro enters the repository with the
# first toolkit release that supports it: Ubuntu 22.04 with 11.7, Debian 12 with 12.3
# (https://github.com/NVIDIA/nvidia-docker/issues/1791: "With the release of CUDA 12.3, ...
# Debian 12 has been added"), Ubuntu 24.04 with 12.5 (the 12.5 release notes add it); the
# WSL-Ubuntu repository carries every release gpulab offers (11.8 on).
REPO_FIRST_TOOLKIT: dict[str, str] = {
    "ubuntu2204": "11.7",
    "ubuntu2404": "12.5",
    "debian12": "12.3",
    "wsl-ubuntu": "11.8",
}

# What Canonical's archive gives for each driver branch gpulab knows, per Ubuntu release:
# the branch itself, the branch its packages are a transitional dummy for, or None (absent).
# Evidence: `apt-cache show nvidia-driver-NNN` as snapd's nvidia-files spread test records it
# (https://github.com/canonical/snapd/blob/master/tests/main/nvidia-files/task.yaml: 550 and
# 550-server "transitional-driver", 560 "no-driver" on 22.04 and 24.04, while 535 and
# 535-server are installed and tested there: a real branch, NVIDIA's long-term one);
# 570 moved to 580 (https://github.com/canonical/core-base/pull/439, April 2026);
# 565(-server) and 590 are dummies for 580(-server) and 595 on packages.ubuntu.com. 575 and
# 610 are on no Ubuntu LTS page seen: treated as absent.
UBUNTU_ARCHIVE_BRANCHES: dict[str, dict[int, int | None]] = {
    release: {535: 535, 550: 580, 560: None, 565: 580, 570: 580, 575: None, 580: 580,
              590: 595, 595: 595, 610: None}
    for release in ("22.04", "24.04")
}
