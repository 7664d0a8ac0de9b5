"""The swarm distribution's pure parts: the torrent's name, the room address, the command
lines, the facts' parsers and the settings that refuse it."""

from __future__ import annotations

import pytest

from gpulab.facts.swarm import HostAddresses, SwarmLeftovers
from gpulab.models.swarm import aria2_command, mktorrent_command, room_address, torrent_id
from gpulab.settings import SettingsError, parse_settings


def test_the_same_blobs_name_the_same_torrent_and_others_another() -> None:
    assert torrent_id(["sha256:b", "sha256:a"]) == torrent_id(["sha256:a", "sha256:b"])
    assert torrent_id(["sha256:a"]) != torrent_id(["sha256:a", "sha256:b"])


def test_the_room_address_is_the_one_in_room_cidrs() -> None:
    found = ["10.0.2.15", "10.77.0.3", "fec0::5054:ff:fe12:3456", "fd77::3"]
    assert room_address(found, ["10.77.0.0/24"]) == "10.77.0.3"
    assert room_address(found, ["fd77::/64"]) == "fd77::3"
    assert room_address(found, ["192.168.1.0/24"]) is None


def test_the_torrent_has_no_tracker_no_date_and_no_web_seed() -> None:
    """A web seed in the torrent would have every host pull from the cache from the start;
    the fallback to the cache is the wait step's (``web_seed`` below)."""
    command = mktorrent_command("/c/.b/blobs", "/c/swarm/x.torrent")
    assert command[0] == "mktorrent" and command[-1] == "/c/.b/blobs"
    assert "--no-date" in command
    assert not [part for part in command
                if part.startswith(("-a", "--announce", "-p", "-w", "--web-seed"))]


def test_the_fallback_gives_aria2_the_caches_models_as_the_torrents_web_seed() -> None:
    plain = aria2_command("/m/.s/room.torrent", "/m/.s", "10.77.0.2", False, "/hook")
    fallback = aria2_command("/m/.s/room.torrent", "/m/.s", "10.77.0.2", False, "/hook",
                             web_seed="http://10.77.0.1/models/")
    # URIs after --torrent-file are the torrent's web seeds, not a second download.
    assert plain[-1] == "--torrent-file=/m/.s/room.torrent"
    assert fallback == [*plain, "http://10.77.0.1/models/"]


def test_hosts_check_every_piece_and_everyone_seeds_until_stopped() -> None:
    host = aria2_command("/m/.s/room.torrent", "/m/.s", "10.77.0.2", False, "/hook")
    seed = aria2_command("/c/swarm/x.torrent", "/c/models", "10.77.0.1", True)
    for command in (host, seed):
        assert "--seed-ratio=0.0" in command and "--enable-dht=false" in command
        assert "--listen-port=6881" in command and "--bt-enable-lpd=true" in command
    assert "--check-integrity=true" in host and "--on-bt-download-complete=/hook" in host
    assert "--bt-lpd-interface=10.77.0.2" in host and "--dir=/m/.s" in host
    assert "--bt-seed-unverified=true" in seed and "--check-integrity=true" not in seed


def test_facts_parse_real_output() -> None:
    assert HostAddresses().process(["10.0.2.15 10.77.0.2 fec0::5054:ff:fe12:3456 "]) == [
        "10.0.2.15", "10.77.0.2", "fec0::5054:ff:fe12:3456"]
    assert SwarmLeftovers().process(["unit", "table"]) == ["unit", "table"]
    assert SwarmLeftovers().process([]) == []


def test_swarm_needs_the_room_cache() -> None:
    with pytest.raises(SettingsError, match="room_cache: models_distribution: swarm needs"):
        parse_settings("pc-1", {"models_distribution": "swarm"})
    settings = parse_settings("pc-1", {"models_distribution": "swarm", "room_cache": "10.0.0.5",
                                       "room_cidrs": ["10.0.0.0/24"]})
    assert settings.from_store
