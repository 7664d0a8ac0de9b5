"""The image builder takes its mirror from the host's apt sources, in both formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpulab.lab.mirror import (
    AptSource,
    Mirrors,
    host_mirrors,
    parse_deb822,
    parse_one_line,
    pick_mirrors,
)

pytestmark = pytest.mark.unit

DEB822 = """\
Types: deb deb-src
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""

ONE_LINE = """\
# a comment
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main # trailing
deb http://other.example/ubuntu jammy main
"""


def test_deb822_stanzas_and_disabled_ones() -> None:
    sources = parse_deb822(DEB822)
    assert sources == [
        AptSource("http://mirror.example/debian", ("bookworm", "bookworm-updates"),
                  ("main", "contrib")),
        AptSource("http://security.example/debian-security", ("bookworm-security",), ("main",)),
    ]


def test_deb822_continuation_lines() -> None:
    text = "Types: deb\nURIs: http://a.example/debian\n http://b.example/debian\nSuites: bookworm\n"
    assert [s.uri for s in parse_deb822(text)] == [
        "http://a.example/debian", "http://b.example/debian"]


def test_one_line_with_options_and_comments() -> None:
    sources = parse_one_line(ONE_LINE)
    assert [s.uri for s in sources] == [
        "http://mirror.example/debian",
        "http://security.example/debian-security",
        "http://other.example/ubuntu",
    ]
    assert sources[0].suites == ("bookworm",) and sources[0].components == ("main",)


def test_pick_archive_and_security() -> None:
    assert pick_mirrors(parse_deb822(DEB822)) == Mirrors(
        "http://mirror.example/debian", "http://security.example/debian-security")
    assert pick_mirrors(parse_one_line(ONE_LINE), "jammy") == Mirrors(
        "http://other.example/ubuntu", None)
    assert pick_mirrors(parse_one_line(ONE_LINE), "trixie") is None


def test_host_mirrors_reads_both_formats(tmp_path: Path) -> None:
    d = tmp_path / "etc/apt/sources.list.d"
    d.mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list").write_text("deb http://one.example/debian bookworm main\n")
    (d / "debian.sources").write_text(DEB822)
    # deb822 files are read first, so they win
    assert host_mirrors(root=tmp_path).archive == "http://mirror.example/debian"
    (d / "debian.sources").unlink()
    assert host_mirrors(root=tmp_path) == Mirrors("http://one.example/debian", None)


def test_host_without_source_says_why(tmp_path: Path) -> None:
    (tmp_path / "etc/apt").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="no apt source for suite 'bookworm'"):
        host_mirrors(root=tmp_path)
