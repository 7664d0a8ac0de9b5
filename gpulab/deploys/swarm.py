"""Course models spread by BitTorrent among the room's hosts (``models_distribution: swarm``).

The room cache made the torrent of the course models' blobs (``deploy/room_cache.py``). In
one pyinfra run over the cache and the hosts, in pyinfra's operation order: the swarm starts
everywhere (``aria2c`` in a transient systemd unit; the cache seeds its copy; each host lacking
blobs downloads, its own sound blobs linked in first; BitTorrent's port opened to
``room_cidrs`` only), then the deploy waits on each host until every piece is in and each
blob's sha256 matches (a host whose download stops growing for ``swarm_fallback_seconds``
takes the rest from the cache's nginx too, as a web seed), and only then stops every aria2 and
closes the port, so every host serves until the last one is done. The blobs are then placed
as ``seeded`` places them (``gpulab.deploys.models``). A host that dies fails alone; the
others go on.

    from gpulab.deploys.swarm import swarm_round
    swarm_round(settings, seed=False, blobs=[...], held=[...])
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Generator
from typing import Any

from pyinfra.api.operation import operation
from pyinfra.api.util import get_template
from pyinfra.context import ctx_host, host, state
from pyinfra.operations import apt, files

from gpulab.deploys.common import template
from gpulab.deploys.context import GpulabDataError
from gpulab.facts.swarm import HostAddresses, SwarmLeftovers
from gpulab.models.swarm import (
    LPD_PORT,
    SWARM_PORT,
    TABLE,
    TORRENT_NAME,
    UNIT,
    aria2_command,
    room_address,
    torrent_id,
)
from gpulab.plan.ollama import firewall_rules
from gpulab.settings import ROOM_CACHE_PATHS, Settings, room_cache_address

STAGING = ".gpulab-swarm"
HOOK = "/usr/local/lib/gpulab/swarm-complete"
DONE = ".complete"


def staging_dir(models_dir: str) -> str:
    """Where a host's swarm downloads land: inside its Ollama store (same filesystem, so the
    blobs are renamed into place), where Ollama neither lists nor prunes."""
    return posixpath.join(models_dir, STAGING)


def _firewall(cidrs: list[str]) -> str:
    rules = firewall_rules(SWARM_PORT, cidrs)
    text = get_template(template("models/swarm.nft.j2")).render(
        table=TABLE, port=SWARM_PORT, lpd_port=LPD_PORT, ipv4=rules.ipv4, ipv6=rules.ipv6)
    return f"nft -f - <<'GPULAB_NFT'\n{text}GPULAB_NFT"


_STOP = (f"systemctl stop {UNIT}.service 2>/dev/null || true; "
         f"systemctl reset-failed {UNIT}.service 2>/dev/null || true; "
         f"nft delete table inet {TABLE} 2>/dev/null || true")


@operation(is_idempotent=False)
def swarm_started(torrent: str, directory: str, address: str, room_cidrs: list[str],
                  seed: bool, torrent_url: str | None = None,
                  linked: list[tuple[str, str]] | None = None) -> Generator[str]:
    """aria2 in the room's swarm, in the transient unit ``gpulab-swarm`` (``systemd-run``), with
    BitTorrent's port open to ``room_cidrs`` (nftables table ``inet gpulab_swarm``).

    ``seed``: serve the complete copy in ``directory`` with ``torrent`` (the room cache).
    Otherwise ``torrent`` is downloaded from ``torrent_url`` and the blobs into ``directory``;
    ``linked``: (held blob, name in the torrent) pairs hard-linked in first, so aria2 finds
    them complete and fetches only the rest.

    .. code:: python

        swarm_started(name="Models: swarm started", torrent="/m/.gpulab-swarm/room.torrent",
                      directory="/m/.gpulab-swarm", address="10.0.0.11",
                      room_cidrs=["10.0.0.0/24"], seed=False,
                      torrent_url="http://10.0.0.5/swarm/3f2a9c0d1e4b5a67.torrent")
    """
    steps = ["set -e"]
    if seed:
        missing = shlex.quote(f"{torrent}: no torrent on the room cache; run `pyinfra "
                              "INVENTORY deploy/room_cache.py` with models_distribution: swarm")
        steps.append(f"test -f {shlex.quote(torrent)} || {{ echo {missing} >&2; exit 1; }}")
        argv = aria2_command(torrent, directory, address, seed=True)
        env = ""
    else:
        blobs = posixpath.join(directory, TORRENT_NAME)
        steps.append(f"mkdir -p {shlex.quote(blobs)}")
        for held, name in linked or []:
            dest = shlex.quote(posixpath.join(blobs, name))
            steps.append(f"[ -e {dest} ] || ln {shlex.quote(held)} {dest}")
        done = posixpath.join(directory, DONE)
        unreachable = shlex.quote(f"room cache: cannot download {torrent_url}; run `pyinfra "
                                  "INVENTORY deploy/room_cache.py` with models_distribution: "
                                  "swarm and the same models")
        steps += [f"rm -f {shlex.quote(done)}",
                  f"curl -fsS --retry 5 --retry-connrefused --connect-timeout 30 -o "
                  f"{shlex.quote(torrent)} {shlex.quote(torrent_url or '')} || "
                  f"{{ echo {unreachable} >&2; exit 1; }}"]
        argv = aria2_command(torrent, directory, address, seed=False, on_complete=HOOK)
        env = _host_env(directory)
    steps += [_firewall(room_cidrs), _in_the_unit(argv, env)]
    yield "\n".join(steps)


def _in_the_unit(argv: list[str], env: str) -> str:
    """sh: ``argv`` running in the swarm's transient unit, any earlier one stopped first."""
    return (f"systemctl stop {UNIT}.service 2>/dev/null || true\n"
            f"systemctl reset-failed {UNIT}.service 2>/dev/null || true\n"
            f"systemd-run --quiet --collect --unit={UNIT} {env}-- "
            + " ".join(shlex.quote(part) for part in argv))


def _host_env(directory: str) -> str:
    """systemd-run's option giving the completion hook its mark's path."""
    return f"--setenv=GPULAB_SWARM_DONE={shlex.quote(posixpath.join(directory, DONE))} "


@operation(is_idempotent=False)
def swarm_complete(directory: str, blobs: list[tuple[str, str]], torrent: str, address: str,
                   web_seed: str, fallback_seconds: int) -> Generator[str]:
    """Wait until aria2 has every piece of the room's torrent, then check each blob's sha256.

    ``blobs``: (file name, sha256 hex) of every blob in the torrent. No overall timeout (a
    slow room is slow, not broken), but when the download has not grown for
    ``fallback_seconds`` aria2 is restarted with ``web_seed`` (the cache's ``/models/``) as
    well, once: the pieces on disk are kept and the rest comes from peers and the cache's
    nginx. aria2 ending before completion fails the host with its journal, and a failed host
    stops its own aria2 and closes its port.

    .. code:: python

        swarm_complete(name="Models: swarm complete and checked", directory="/m/.gpulab-swarm",
                       blobs=[("sha256-2bada8...", "2bada8...")],
                       torrent="/m/.gpulab-swarm/room.torrent", address="10.0.0.11",
                       web_seed="http://10.0.0.5/models/", fallback_seconds=60)
    """
    done = shlex.quote(posixpath.join(directory, DONE))
    received = shlex.quote(posixpath.join(directory, TORRENT_NAME))
    sums = "".join(f"{hex_}  {name}\n" for name, hex_ in blobs)
    stopped = shlex.quote(f"swarm: aria2 ended before the models were complete; see "
                          f"journalctl -u {UNIT}")
    mismatch = shlex.quote("swarm: a blob's sha256 does not match its manifest after the "
                           "transfer; run the deploy again")
    fallback = shlex.quote(f"swarm: no progress for {fallback_seconds} s; the rest from "
                           f"{web_seed} as well")
    with_web_seed = aria2_command(torrent, directory, address, seed=False, on_complete=HOOK,
                                  web_seed=web_seed)
    # Bytes on disk, not file sizes: aria2 writes pieces in place into sparse files.
    yield (f"fail() {{ echo \"$1\" >&2; {_STOP}; exit 1; }}\n"
           "size=-1; quiet=0; fell_back=no\n"
           f"while [ ! -e {done} ]; do\n"
           f"  systemctl is-active -q {UNIT}.service || {{ journalctl -u {UNIT} -n 20 "
           f"--no-pager >&2 || true; fail {stopped}; }}\n"
           f"  now=$(du -s --block-size=1 {received} | cut -f1)\n"
           '  if [ "$now" != "$size" ]; then size=$now; quiet=0; else quiet=$((quiet + 2)); fi\n'
           f'  if [ $fell_back = no ] && [ $quiet -ge {fallback_seconds} ]; then\n'
           f"    echo {fallback}; fell_back=yes\n"
           f"{_in_the_unit(with_web_seed, _host_env(directory))}\n"
           "  fi\n"
           "  sleep 2\n"
           "done\n"
           f"cd {received} && sha256sum --check "
           f"--strict --quiet <<'GPULAB_SUMS' || fail {mismatch}\n{sums}GPULAB_SUMS")


@operation(is_idempotent=False)
def swarm_stopped() -> Generator[str]:
    """The swarm's aria2 stopped and its port closed (the nftables table deleted).

    .. code:: python

        swarm_stopped(name="Models: swarm stopped, port closed")
    """
    yield _STOP


def _others_join(op_hash: list[str]) -> bool:
    """At run time: does another host of this run, not failed, take part in the swarm."""
    this = ctx_host.get()  # the Host itself: pyinfra's sets of hosts hold those
    return any(op_hash[0] in state.ops[other] for other in state.inventory
               if other is not this and other not in state.failed_hosts)


def is_room_seed(settings: Settings) -> bool:
    """Whether this host is the room cache, the swarm's first seed (one of its addresses)."""
    if settings.room_cache is None:
        return False
    return room_cache_address(settings.room_cache)[0] in host.get_fact(HostAddresses)


def swarm_round(settings: Settings, seed: bool, blobs: list[tuple[str, str]],
                lacking: bool, held: list[str]) -> None:
    """One round of the room's swarm on this host: start, wait (hosts), stop.

    Called from one place for the cache and the hosts alike, so pyinfra orders the cache's
    start before the hosts' waits, and its stop after them. ``blobs``: (file name, sha256
    hex) of the course models' blobs, the torrent's content; ``lacking``: this host lacks
    some; ``held``: the file names of those it holds sound.
    """
    leftovers = host.get_fact(SwarmLeftovers)
    addresses: list[str] = host.get_fact(HostAddresses)
    address = room_address(addresses, settings.room_cidrs)
    if address is None:
        raise GpulabDataError(f"{host.name}: no address in room_cidrs "
                              f"({', '.join(settings.room_cidrs)}): the swarm runs on the "
                              "room's network\nnothing was changed")
    room = torrent_id(f"sha256:{hex_}" for _, hex_ in blobs)
    started = None
    if seed or lacking:
        apt.packages(name="Models: aria2 and nftables for the swarm",
                     packages=["aria2", "nftables", "curl"], no_recommends=True,
                     update=True, cache_time=settings.apt_cache_time)
        if not seed:
            files.template(name="Models: the swarm's completion hook",
                           src=template("models/swarm-complete.sh.j2"), dest=HOOK, mode="755")
        op_hash: list[str] = []
        # The cache seeds only when a host of this run downloads (a rerun on complete hosts
        # starts nothing); the hosts' start is the same operation, so it has the same hash.
        only_if: dict[str, Any] = {"_if": lambda: _others_join(op_hash)} if seed else {}
        staging = staging_dir(settings.ollama_models_dir)
        host_torrent = posixpath.join(staging, "room.torrent")
        started = swarm_started(
            name="Models: swarm started", seed=seed, address=address,
            room_cidrs=settings.room_cidrs,
            torrent=(posixpath.join(settings.room_cache_dir + ROOM_CACHE_PATHS["swarm"],
                                    f"{room}.torrent") if seed
                     else host_torrent),
            directory=(settings.room_cache_dir + ROOM_CACHE_PATHS["models"] if seed
                       else staging),
            torrent_url=(None if seed else f"{settings.room_cache_url}"
                         f"{ROOM_CACHE_PATHS['swarm']}/{room}.torrent"),
            linked=[(posixpath.join(settings.ollama_models_dir, "blobs", name), name)
                    for name in held],
            **only_if,
        )
        op_hash.append(started._hash)
        if not seed:
            swarm_complete(name="Models: swarm complete and checked", directory=staging,
                           blobs=blobs, torrent=host_torrent,
                           address=address, fallback_seconds=settings.swarm_fallback_seconds,
                           web_seed=f"{settings.room_cache_url}{ROOM_CACHE_PATHS['models']}/")
    if started is not None or leftovers:
        # The cache stops what it started; leftovers of an earlier run are stopped anyway.
        seeded = started
        when: dict[str, Any] = ({"_if": lambda: seeded.did_change()}
                                if seed and seeded is not None and not leftovers else {})
        swarm_stopped(name="Models: swarm stopped, port closed", **when)
