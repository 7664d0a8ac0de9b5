"""The room cache: one machine of the room takes every byte from the internet once.

apt-cacher-ng (Debian's and Ubuntu's package) caches the archives and NVIDIA's HTTPS
repository for every host (hosts reach that through ``http://HTTPS///host/path``, its
documented way of caching an HTTPS upstream; apt still checks the signatures); its report page
is off and libwrap admits only the room's networks. nginx (the distribution's package) serves
``room_cache_dir`` read-only to the room's networks: the pinned Ollama release for each
machine in ``room_cache_machines`` (archive and ``sha256sum.txt``, as the release server lays
them out), ``cuda-keyring`` per distro, and the course models in Ollama's store layout (also
answering Ollama's registry protocol). The files come from the real upstreams (or the keys
pointing at mirrors); the models from the instructor's ``models_store``, each file checked on
the cache. A marker file is written last: hosts check it answers before they use the cache.

    from gpulab.deploys.room_cache import room_cache
    room_cache()
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import posixpath
import shlex
import urllib.parse
from collections.abc import Generator
from io import BytesIO, StringIO
from pathlib import Path

from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.facts.files import File, FileContents
from pyinfra.operations import apt, files, server, systemd

from gpulab.deploys.common import changed, gpulab_deploy, refused, template
from gpulab.deploys.context import GpulabDataError, host_settings
from gpulab.deploys.models import complete_in_store, copied_from_store, verified_download
from gpulab.facts.http import RegistryManifest
from gpulab.facts.model import ModelStoreFacts
from gpulab.facts.models import OllamaModelStore, stamp_path
from gpulab.models.names import parse_model_name
from gpulab.models.store import Manifest, Store, StoreError, manifest_digest, parse_manifest
from gpulab.models.swarm import TORRENT_NAME, mktorrent_command, torrent_id
from gpulab.plan import ollama as ollama_lib
from gpulab.plan.host import CUDA_KEYRING
from gpulab.settings import (
    APT_CACHER_PORT,
    ROOM_CACHE_MARKER,
    ROOM_CACHE_PATHS,
    Settings,
    from_room_cache,
    room_cache_address,
    upstream_url,
)

ACNG_CONF = "/etc/apt-cacher-ng/zz-gpulab.conf"
NGINX_SITE = "/etc/nginx/sites-available/gpulab-room-cache"
NGINX_ENABLED = "/etc/nginx/sites-enabled/gpulab-room-cache"


def wrapped_networks(cidrs: list[str]) -> str:
    """The room's networks as libwrap's hosts.allow reads them (``net/mask``), loopback first.

    >>> wrapped_networks(["10.0.0.0/24", "192.168.1.7/32"])
    '127.0.0.1 10.0.0.0/255.255.255.0 192.168.1.7/255.255.255.255'
    """
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]
    return " ".join(["127.0.0.1", *(f"{n.network_address}/{n.netmask}" for n in networks)])


@operation()
def torrent_made(models_dir: str, blobs: list[str], torrent: str) -> Generator[str]:
    """The room's torrent of ``blobs`` (file names in ``models_dir/blobs``) at ``torrent``,
    made by ``mktorrent``, unless present.

    The blobs are hard-linked into a directory of their own first (the torrent holds the
    course models' blobs and nothing else the store may hold); the torrent takes its name
    only once complete.

    .. code:: python

        torrent_made(name="Room cache: the swarm's torrent", models_dir="/srv/gpulab-cache/models",
                     blobs=["sha256-2bada8..."],
                     torrent="/srv/gpulab-cache/swarm/3f2a9c0d1e4b5a67.torrent")
    """
    if host.get_fact(File, path=torrent):
        host.noop(f"{torrent} is already made")
        return
    build = posixpath.join(posixpath.dirname(models_dir), ".gpulab-swarm-build")
    linked = posixpath.join(build, TORRENT_NAME)
    partial = torrent + ".partial"
    links = "; ".join(f"ln {shlex.quote(posixpath.join(models_dir, 'blobs', name))} "
                      f"{shlex.quote(posixpath.join(linked, name))}" for name in blobs)
    yield (f"set -e; rm -rf {shlex.quote(build)} {shlex.quote(partial)}; "
           f"mkdir -p {shlex.quote(linked)} {shlex.quote(posixpath.dirname(torrent))}; "
           f"{links}; "
           + " ".join(shlex.quote(part) for part in mktorrent_command(linked, partial))
           + f" >/dev/null; chmod 644 {shlex.quote(partial)}; "
           f"mv -f {shlex.quote(partial)} {shlex.quote(torrent)}; rm -rf {shlex.quote(build)}")


@operation()
def release_mirrored(version: str, machine: str, base: str, dest_dir: str,
                     sha256: str | None = None, https_proxy: str | None = None,
                     no_proxy: list[str] | tuple[str, ...] = ()) -> Generator[str]:
    """Ollama ``version`` for ``machine`` downloaded, verified and laid out in ``dest_dir``
    as the release server does; listed in its ``sha256sum.txt`` only once complete.

    .. code:: python

        release_mirrored(name="Ollama 0.34.2 x86_64", version="0.34.2", machine="x86_64",
                         base="https://github.com/ollama/ollama/releases/download",
                         dest_dir="/srv/gpulab-cache/ollama/v0.34.2")
    """
    name = ollama_lib.archive_name(version, machine)
    sums = host.get_fact(FileContents, path=posixpath.join(dest_dir, "sha256sum.txt")) or []
    listed = {line.split()[1]: line.split()[0] for line in sums if len(line.split()) == 2}
    if name in listed and (sha256 is None or listed[name] == sha256):
        host.noop(f"{name} {version} is already in {dest_dir}")
        return
    yield ollama_lib.mirror_script(version, machine, base, sha256, dest_dir, https_proxy,
                                   tuple(no_proxy))


def _upstream(settings: Settings, key: str) -> str:
    """Where the cache itself fetches what hosts get from it: the real source (or the
    inventory's mirror), never the cache."""
    value: str = getattr(settings, key)
    if from_room_cache(settings, key) and key == "ollama_download_base":
        return str(Settings.model_fields[key].default)
    return upstream_url(value)


def upstream_ports(urls: list[str]) -> list[int]:
    """The ports apt-cacher-ng must be allowed to reach: HTTP, HTTPS and any upstream's own.

    >>> upstream_ports(["https://developer.download.nvidia.com/compute", "http://m.lab:8080/a"])
    [80, 443, 8080]
    """
    ports = {80, 443}
    for url in urls:
        parsed = urllib.parse.urlsplit(url)
        ports.add(parsed.port or (443 if parsed.scheme == "https" else 80))
    return sorted(ports)


def _apt_cacher(settings: Settings) -> None:
    config = files.template(
        name="apt-cacher-ng: port, upstream ports, no report page, libwrap",
        src=template("room_cache/apt-cacher-ng.conf.j2"), dest=ACNG_CONF, mode="644",
        port=APT_CACHER_PORT,
        upstream_ports=upstream_ports([_upstream(settings, "nvidia_repo_base")]),
    )
    allowed = files.line(
        name="apt-cacher-ng: the room's networks (hosts.allow)", path="/etc/hosts.allow",
        line="^apt-cacher-ng:.*", replace=f"apt-cacher-ng: {wrapped_networks(settings.room_cidrs)}",
    )
    denied = files.line(
        name="apt-cacher-ng: nobody else (hosts.deny)", path="/etc/hosts.deny",
        line="^apt-cacher-ng:.*", replace="apt-cacher-ng: ALL",
    )
    systemd.service(name="apt-cacher-ng restarted (configuration changed)",
                    service="apt-cacher-ng.service", running=True, restarted=True,
                    _if=changed(config, allowed, denied))
    systemd.service(name="apt-cacher-ng running and enabled", service="apt-cacher-ng.service",
                    running=True, enabled=True)


def _served_files(settings: Settings) -> None:
    root = settings.room_cache_dir
    version = settings.ollama_version
    release_dir = posixpath.join(root + ROOM_CACHE_PATHS["ollama"], f"v{version}")
    files.directory(name=f"Room cache: {release_dir}", path=release_dir, mode="755",
                    present=True)
    for machine in settings.room_cache_machines:
        release_mirrored(
            name=f"Room cache: Ollama {version} {machine}", version=version, machine=machine,
            base=_upstream(settings, "ollama_download_base"), dest_dir=release_dir,
            sha256=ollama_lib.known_sha256(version, machine, settings.ollama_sha256),
            https_proxy=settings.https_proxy, no_proxy=settings.no_proxy,
        )
    nvidia = _upstream(settings, "nvidia_repo_base")
    for distro in settings.room_cache_nvidia_distros:
        keyring_dir = posixpath.join(root + ROOM_CACHE_PATHS["nvidia"], distro, "x86_64")
        files.directory(name=f"Room cache: {keyring_dir}", path=keyring_dir, mode="755",
                        present=True)
        files.download(name=f"Room cache: cuda-keyring for {distro}",
                       src=f"{nvidia}/{distro}/x86_64/{CUDA_KEYRING}",
                       dest=posixpath.join(keyring_dir, CUDA_KEYRING), mode="644",
                       proxy=settings.https_proxy)
    models_root = root + ROOM_CACHE_PATHS["models"]
    held = host.get_fact(OllamaModelStore, models_dir=models_root)
    digests = {entry.path: manifest_digest(base64.b64decode(entry.data_base64))
               for entry in held.manifests}
    layers = {}
    for name_text in settings.models:
        name = parse_model_name(name_text)
        held_digest = digests.get(name.manifest_path.removeprefix("manifests/"))
        manifest: Manifest | None
        if settings.models_store is not None:
            model = complete_in_store(settings.models_store, name_text)
            copied_from_store(model, Store(Path(settings.models_store).expanduser()),
                              models_root, held, held_digest, "root")
            manifest = model.manifest
        else:
            manifest = _fetched_by_the_cache(settings, name_text, models_root, held,
                                             held_digest)
        if manifest is not None:
            layers.update({layer.file_name: layer.digest for layer in manifest.blobs})
    if settings.models_distribution == "swarm":
        apt.packages(name="mktorrent (the swarm's torrent)", packages=["mktorrent"],
                     no_recommends=True, update=True, cache_time=settings.apt_cache_time)
        torrent_made(name="Room cache: the swarm's torrent", models_dir=models_root,
                     blobs=sorted(layers),
                     torrent=posixpath.join(root + ROOM_CACHE_PATHS["swarm"],
                                            f"{torrent_id(layers.values())}.torrent"))


def _fetched_by_the_cache(settings: Settings, name_text: str, models_root: str,
                          held: ModelStoreFacts, held_digest: str | None) -> Manifest | None:
    """Without ``models_store`` the cache downloads the model from ``models_registry``
    itself: the manifest read on the cache (a fact), each blob it lacks resumed and
    sha256-checked there, the manifest written last under Ollama's canonical name; the
    manifest (None, with the cache refused, when the registry has none)."""
    name = parse_model_name(name_text)
    source = (name if settings.models_registry.rstrip("/") == name.base_url
              else name.through(settings.models_registry))
    answer = host.get_fact(RegistryManifest, url=source.manifest_url,
                           proxy=settings.https_proxy)
    try:
        data = base64.b64decode(answer or "", validate=True)
        manifest = parse_manifest(data, source.manifest_url)
    except (binascii.Error, StoreError):
        refused(name=f"Room cache: {name.short} from {settings.models_registry}", reason=(
            f"{source.manifest_url}: no manifest for the room cache ({answer}); check "
            "models_registry and the cache's network, or fill a store on your machine "
            "(gpulab models fetch) and set models_store"))
        return None
    blobs_dir = posixpath.join(models_root, "blobs")
    for level in ("blobs", "manifests"):
        files.directory(name=f"Models: {models_root}/{level}/",
                        path=posixpath.join(models_root, level), mode="755", present=True)
    for layer in manifest.blobs:
        if not held.sound(layer.file_name, layer.size):
            verified_download(name=f"Models: {name.short} blob {layer.hex[:12]} from "
                              f"{settings.models_registry}", url=source.blob_url(layer.digest),
                              dest=posixpath.join(blobs_dir, layer.file_name),
                              sha256=layer.hex, staging_dir=blobs_dir,
                              stamp=stamp_path(models_root), owner="root",
                              proxy=settings.https_proxy)
    if held_digest != manifest_digest(data):
        manifest_file = posixpath.join(models_root, name.manifest_path)
        files.directory(name=f"Models: {posixpath.dirname(name.manifest_path)}/",
                        path=posixpath.dirname(manifest_file), mode="755", present=True)
        files.put(name=f"Models: {name.short} manifest (written last)", src=BytesIO(data),
                  dest=manifest_file, mode="644")
    return manifest


def _nginx(settings: Settings) -> None:
    _, port = room_cache_address(settings.room_cache or "127.0.0.1")
    site = files.template(
        name="nginx: the room cache's site", src=template("room_cache/nginx-site.conf.j2"),
        dest=NGINX_SITE, mode="644", port=port, root=settings.room_cache_dir,
        allowed=["127.0.0.1", *settings.room_cidrs],
        jinja_env_kwargs={"trim_blocks": True, "lstrip_blocks": True},
    )
    enabled = files.link(name="nginx: site enabled", path=NGINX_ENABLED, target=NGINX_SITE)
    # Debian's default site also claims port 80 as the default server.
    default = files.link(name="nginx: Debian's default site disabled",
                         path="/etc/nginx/sites-enabled/default", present=False)
    server.shell(name="nginx: configuration valid", commands=["nginx -t -q"],
                 _if=changed(site, enabled, default))
    systemd.service(name="nginx reloaded (site changed)", service="nginx.service",
                    running=True, reloaded=True, _if=changed(site, enabled, default))
    systemd.service(name="nginx running and enabled", service="nginx.service", running=True,
                    enabled=True)


@gpulab_deploy("gpulab room cache")
def room_cache() -> None:
    """apt-cacher-ng and nginx for the room, filled once from the upstreams."""
    settings = host_settings(host)
    if not settings.room_cidrs:
        raise GpulabDataError(f"{host.name}: room_cidrs: the room cache serves only the room's "
                              "networks; list them (e.g. ['10.0.0.0/24'])\nnothing was changed")
    apt.packages(name="apt-cacher-ng, nginx", packages=["apt-cacher-ng", "nginx", "curl"],
                 no_recommends=True, update=True, cache_time=settings.apt_cache_time)
    _apt_cacher(settings)
    files.directory(name=f"Room cache: {settings.room_cache_dir}",
                    path=settings.room_cache_dir, mode="755", present=True)
    _served_files(settings)
    _nginx(settings)
    files.put(name="Room cache: marker (written last)", src=StringIO("gpulab room cache\n"),
              dest=settings.room_cache_dir + ROOM_CACHE_MARKER, mode="644")
