"""The swarm distribution's pure decisions: which torrent, which address, which command lines.

The room's torrent carries the course models' blobs (``blobs/sha256-<hex>``, never the
manifests), made on the room cache by ``mktorrent``. Every host runs ``aria2c`` on it; peers
find each other by Local Peer Discovery (BEP 14, multicast on the room's network), not a
tracker nor the DHT.

The torrent has no web seed: aria2 uses a torrent's web seeds over HTTP from the start,
alongside the peers, with no way to keep them for later, so every host would pull much of its
copy from the cache's one link (measured: the cache sent 2.3 copies for 3 hosts). Instead a
host whose download stops growing for ``swarm_fallback_seconds`` restarts aria2 with the
cache's ``/models/`` as a BEP 19 web seed (``--torrent-file`` plus that URI; the pieces it has
are kept), so the swarm can only be faster than plain HTTP from the cache, never stuck.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

# BitTorrent's TCP port and Local Peer Discovery's UDP port (multicast 239.192.152.143),
# opened to room_cidrs only while the swarm runs.
SWARM_PORT = 6881
LPD_PORT = 6771
UNIT = "gpulab-swarm"
TABLE = "gpulab_swarm"
# 2^22 = 4 MiB pieces: a 4.7 GB blob is ~1100 pieces, a small metainfo file.
PIECE_EXPONENT = 22
# The torrent's name: the directory the blobs lie in, under the cache's /models/ and under
# each host's staging directory.
TORRENT_NAME = "blobs"


# Part of the torrent's name: a cache holding a torrent of another layout (pieces, web
# seed) makes a new one instead of reusing it.
TORRENT_LAYOUT = f"pieces 2^{PIECE_EXPONENT}, no web seed"


def torrent_id(digests: Iterable[str]) -> str:
    """The room torrent's name for a set of blobs: the same set, the same torrent.

    >>> torrent_id(["sha256:bb", "sha256:aa"]) == torrent_id(["sha256:aa", "sha256:bb"])
    True
    >>> len(torrent_id(["sha256:aa"]))
    16
    """
    return hashlib.sha256("\n".join([*sorted(set(digests)), TORRENT_LAYOUT]).encode()
                          ).hexdigest()[:16]


def room_address(addresses: Iterable[str], cidrs: Iterable[str]) -> str | None:
    """The host's first address inside the room's networks (where its peers reach it).

    >>> room_address(["10.0.2.15", "10.77.0.3", "fe80::1"], ["10.77.0.0/24"])
    '10.77.0.3'
    >>> room_address(["10.0.2.15"], ["10.77.0.0/24"]) is None
    True
    """
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        if any(address.version == net.version and address in net for net in networks):
            return str(address)
    return None


def mktorrent_command(source_dir: str, output: str) -> list[str]:
    """``mktorrent`` making the room's torrent of ``source_dir`` (named by its last part).

    No tracker (peers meet by Local Peer Discovery, which a private torrent would forbid), no
    web seed (see above) and no creation date, so the same blobs always give the same
    info-hash.

    >>> mktorrent_command("/c/.swarm/blobs", "/c/swarm/ab.torrent")[1:3]
    ['--no-date', '--piece-length=22']
    """
    return ["mktorrent", "--no-date", f"--piece-length={PIECE_EXPONENT}", f"--output={output}",
            source_dir]


def aria2_command(torrent: str, directory: str, address: str, seed: bool,
                  on_complete: str | None = None, web_seed: str | None = None) -> list[str]:
    """``aria2c`` in the swarm: downloading into ``directory`` (every piece checked against the
    torrent, pieces already on disk kept), or, with ``seed``, serving the complete copy there.

    Both seed until stopped (``--seed-ratio=0.0``): every host serves until the deploy stops
    the swarm after the last host finished. Peers meet by Local Peer Discovery on the room
    address; DHT is off. The seed serves the cache's copy without hashing it again (each
    blob was sha256-checked when the cache received it; receivers check every piece).
    ``on_complete``: run once every piece is downloaded and checked, before seeding.
    ``web_seed``: the URL of a directory holding the torrent's ``blobs/`` (the cache's
    ``/models/``), fetched from over HTTP alongside the peers.

    >>> aria2_command("/m/.s/room.torrent", "/m/.s", "10.77.0.2", False, "/hook")[-2:]
    ['--on-bt-download-complete=/hook', '--torrent-file=/m/.s/room.torrent']
    >>> aria2_command("/m/.s/room.torrent", "/m/.s", "10.77.0.2", False,
    ...               web_seed="http://10.77.0.1/models/")[-2:]
    ['--torrent-file=/m/.s/room.torrent', 'http://10.77.0.1/models/']
    >>> "--bt-seed-unverified=true" in aria2_command("/srv/c/swarm/ab.torrent", "/srv/c/models",
    ...                                               "10.77.0.1", True)
    True
    """
    command = [
        "aria2c", f"--dir={directory}", f"--listen-port={SWARM_PORT}",
        "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=true",
        f"--bt-lpd-interface={address}", "--enable-peer-exchange=true", "--seed-ratio=0.0",
        "--file-allocation=none", "--auto-file-renaming=false", "--summary-interval=0",
        "--console-log-level=notice",
    ]
    if seed:
        command.append("--bt-seed-unverified=true")
    else:
        command.append("--check-integrity=true")
        if on_complete is not None:
            command.append(f"--on-bt-download-complete={on_complete}")
    # With --torrent-file, aria2 takes the URIs that follow as the torrent's web seeds.
    return [*command, f"--torrent-file={torrent}", *([web_seed] if web_seed else [])]
