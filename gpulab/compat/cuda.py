"""Which CUDA toolkit a driver can run, from Table 3 of the release notes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gpulab.compat.tables import (
    CUDA_TOOLKITS,
    MINOR_VERSION_FLOORS,
    REPO_FIRST_TOOLKIT,
    ToolkitRow,
)
from gpulab.compat.versions import parse_version

Platform = Literal["linux", "windows"]


class CompatError(ValueError):
    """No toolkit fits, or a pinned toolkit needs a newer driver."""


class NotInRepository(CompatError):
    """The driver runs toolkits, but NVIDIA's repository for this distro has none of them."""


@dataclass(frozen=True)
class Toolkit:
    """A CUDA toolkit release and how apt names it."""

    version: str
    min_driver: str
    platform: Platform

    @property
    def major_minor(self) -> str:
        """``"12.6"`` for 12.6.2."""
        return ".".join(self.version.split(".")[:2])

    @property
    def package(self) -> str:
        """The meta package that stays on this minor release: ``cuda-toolkit-12-6``."""
        return "cuda-toolkit-" + self.major_minor.replace(".", "-")

    @property
    def apt_version(self) -> str:
        """An apt version glob for exactly this update: ``12.6.2-*``."""
        return f"{self.version}-*"

    @property
    def prefix(self) -> str:
        """Where the deb packages install it: ``/usr/local/cuda-12.6``."""
        return f"/usr/local/cuda-{self.major_minor}"


def _minimum(row: ToolkitRow, platform: Platform) -> str | None:
    return row.linux_min if platform == "linux" else row.windows_min


def choose_toolkit(
    driver_version: str,
    platform: Platform = "linux",
    max_major: int | None = None,
    repo: str | None = None,
) -> Toolkit:
    """The newest toolkit release whose minimum driver ``driver_version`` meets.

    ``platform`` is ``windows`` under WSL2, where nvidia-smi reports the Windows driver.
    Releases whose minimum Table 3 prints as N/A (every 13.x row for Windows) are not chosen.
    ``max_major`` caps the CUDA major (CUDA 13 dropped Maxwell, Pascal and Volta).
    ``repo`` (``debian12``) keeps the choice to releases NVIDIA's repository for it carries.

    >>> choose_toolkit("560.35.03").version
    '12.6.2'
    """
    have = parse_version(driver_version)
    for row in CUDA_TOOLKITS:
        minimum = _minimum(row, platform)
        if max_major is not None and _major(row.version) > max_major:
            continue
        if minimum is not None and have >= parse_version(minimum):
            if repo is not None and not repo_carries(repo, row.version):
                raise NotInRepository(
                    f"driver {driver_version} ({platform}) runs CUDA {row.version} at most, but "
                    f"NVIDIA's {repo} repository starts at CUDA {REPO_FIRST_TOOLKIT[repo]}"
                )
            return Toolkit(row.version, minimum, platform)
    oldest = CUDA_TOOLKITS[-1]
    raise CompatError(
        f"driver {driver_version} ({platform}) is older than every CUDA toolkit gpulab offers: "
        f"the oldest, {oldest.version}, needs {_minimum(oldest, platform)} or newer; "
        "upgrade the driver"
    )


def repo_carries(repo: str, version: str) -> bool:
    """Whether NVIDIA's repository for ``repo`` (``ubuntu2404``) has this toolkit release.

    >>> repo_carries("ubuntu2404", "12.4.1"), repo_carries("ubuntu2404", "12.5.0")
    (False, True)
    """
    return parse_version(version)[:2] >= parse_version(REPO_FIRST_TOOLKIT[repo])[:2]


def _major(version: str) -> int:
    return int(version.split(".")[0])


def find_release(requested: str) -> ToolkitRow:
    """The release a pin names: ``12.6`` means its newest update, ``12.6.2`` exactly that."""
    parts = requested.split(".")
    for row in CUDA_TOOLKITS:
        same_minor = len(parts) == 2 and row.version.startswith(requested + ".")
        if row.version == requested or same_minor:
            return row
    offered = ", ".join(row.version for row in CUDA_TOOLKITS)
    raise CompatError(f"CUDA toolkit {requested!r} is not in gpulab's table; offered: {offered}")


def check_pinned_toolkit(
    requested: str,
    driver_version: str,
    platform: Platform,
    max_major: int | None = None,
    repo: str | None = None,
) -> Toolkit:
    """A pinned toolkit, refused when ``driver_version`` is below its minimum or NVIDIA's
    repository for ``repo`` does not carry it.

    Where Table 3 prints N/A (13.x on Windows), the CUDA major's minor-version floor applies.
    """
    row = find_release(requested)
    if repo is not None and not repo_carries(repo, row.version):
        raise NotInRepository(
            f"NVIDIA's {repo} repository has no CUDA {row.version}: it starts at "
            f"{REPO_FIRST_TOOLKIT[repo]}; pin {REPO_FIRST_TOOLKIT[repo]} or newer"
        )
    if max_major is not None and _major(row.version) > max_major:
        raise CompatError(
            f"CUDA {row.version} does not support this host's GPUs (their last CUDA is "
            f"{max_major}.x); pin a {max_major}.x release"
        )
    minimum = _minimum(row, platform)
    if minimum is None:
        minimum = minor_version_floor(_major(row.version), platform)
    if parse_version(driver_version) < parse_version(minimum):
        best = choose_toolkit(driver_version, platform, max_major).version
        raise CompatError(
            f"CUDA {row.version} needs driver {minimum} or newer ({platform}), "
            f"but the driver is {driver_version}; pin {best} or older, or choose a newer branch"
        )
    return Toolkit(row.version, minimum, platform)


def minor_version_floor(major: int, platform: Platform) -> str:
    """The oldest driver that runs toolkits of ``major`` under minor-version compatibility."""
    for floor in MINOR_VERSION_FLOORS:
        if floor.major == major:
            value = floor.linux_min if platform == "linux" else floor.windows_min
            if value is not None:
                return value
    raise CompatError(f"no minor-version floor known for CUDA {major}.x on {platform}")
