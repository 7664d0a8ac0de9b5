"""Adding components to a host's own Debian sources, both formats, nothing else touched."""

from __future__ import annotations

import pytest

from gpulab.facts.apt import AptSourceFiles, HeldPackages
from gpulab.plan.apt_sources import add_components

pytestmark = pytest.mark.unit

NONFREE = ("main", "contrib", "non-free", "non-free-firmware")

DEB822 = """Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://download.example/linux/debian
Suites: bookworm
Components: stable
"""

ONE_LINE = """# my mirror
deb http://mirror.example/debian bookworm main
deb [arch=amd64] http://mirror.example/debian bookworm-updates main contrib
deb http://mirror.example/debian-security bookworm-security main
deb http://other.example/repo stable main
deb [arch=amd64] https://download.example/linux/debian bookworm stable
"""


def test_deb822_components_added_to_every_bookworm_stanza() -> None:
    edited = add_components(DEB822, "bookworm", NONFREE)
    assert edited.count("Components: main contrib non-free non-free-firmware") == 2
    assert edited.endswith("Suites: bookworm\nComponents: stable\n")  # third party untouched
    assert "URIs: http://mirror.example/debian\n" in edited  # the mirror is kept
    assert add_components(edited, "bookworm", NONFREE) == edited  # idempotent


def test_one_line_sources() -> None:
    edited = add_components(ONE_LINE, "bookworm", NONFREE)
    assert "deb http://mirror.example/debian bookworm main contrib non-free non-free-firmware" in (
        edited
    )
    assert (
        "deb [arch=amd64] http://mirror.example/debian bookworm-updates main contrib non-free "
        "non-free-firmware" in edited
    )
    assert "deb http://other.example/repo stable main\n" in edited  # other suites untouched
    # a third-party repository for the same codename keeps its own components
    assert "https://download.example/linux/debian bookworm stable\n" in edited
    assert edited.startswith("# my mirror\n")
    assert add_components(edited, "bookworm", NONFREE) == edited


def test_facts_parse_their_output() -> None:
    assert HeldPackages().process(["nvidia-driver", "", "cuda-toolkit-12-2"]) == [
        "cuda-toolkit-12-2", "nvidia-driver",
    ]
    files = AptSourceFiles().process([
        "==> /etc/apt/sources.list.d/debian.sources", "Types: deb", "Suites: bookworm", "",
        "==> /etc/apt/sources.list", "deb http://m/debian bookworm main",
    ])
    assert files == {
        "/etc/apt/sources.list.d/debian.sources": "Types: deb\nSuites: bookworm\n",
        "/etc/apt/sources.list": "deb http://m/debian bookworm main\n",
    }
