"""Course models into each host's Ollama store, the room's one copy coming from the instructor.

``direct``: each host's own Ollama pulls (``POST /api/pull``) through a small client the
deploy uploads; a model already complete on the host (the plan reads its store) is not pulled.

``seeded``: the instructor's store (``models_store``, filled once by ``gpulab models fetch`` or
``import``) is the source; each host is sent only the blobs it lacks, by ``rsync`` over the
host's SSH connection (pyinfra's own rsync command: OpenSSH, one process per host, so hosts
copy in parallel at ``rsync`` speed; an interrupted copy is resumed from its partial file).
Every blob lands in a staging directory inside the store, is sha256-checked **on the host**,
owned by ``ollama``, touched (a fresh mtime, so Ollama's startup prune of unreferenced blobs
older than an hour keeps it) and renamed into place: blobs first, the manifest last. Then the
host's own ``/api/tags`` must list the model. A host that has everything is sent nothing.

Corrupt blobs: ``ollama pull`` trusts a blob already on disk, so the store fact hashes every
blob gpulab has not checked before (``gpulab.facts.models``); a corrupt one is sent again
(seeded) or deleted before the pull (direct). Each blob gpulab checked or placed gets a line in
the store's stamp file, so a rerun hashes nothing it has seen unchanged.

    from gpulab.deploys.models import course_models
    course_models()
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import shlex
from collections.abc import Generator
from functools import cache
from pathlib import Path

from pyinfra.api.command import FileUploadCommand, RsyncCommand
from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.operations import apt, files

from gpulab.deploys.common import gpulab_deploy, missing_packages, refused, say, template
from gpulab.deploys.context import GpulabDataError, host_facts, host_plan, host_settings
from gpulab.deploys.swarm import is_room_seed, staging_dir, swarm_round
from gpulab.facts.http import RegistryManifest
from gpulab.facts.model import ModelStoreFacts
from gpulab.facts.models import blob_check_command, stamp_path
from gpulab.models.names import parse_model_name
from gpulab.models.store import Layer, Store, StoredModel, StoreError, parse_manifest
from gpulab.plan.host import HostPlan
from gpulab.plan.models import ModelFit
from gpulab.settings import ROOM_CACHE_PATHS, Settings

OWNER = "ollama"
PULL_SCRIPT = "/usr/local/lib/gpulab/ollama-pull"
INCOMING = ".gpulab-incoming"


@cache
def complete_in_store(root: str, name_text: str) -> StoredModel:
    """The instructor's copy of a model, every blob checked once per run (not once per host)."""
    name = parse_model_name(name_text)
    store = Store(Path(root).expanduser())
    stored = store.read(name)
    if stored is None:
        raise GpulabDataError(f"{name.short}: not in models_store {root}: run `gpulab models "
                              f"fetch {name.short} --store {root}` first\nnothing was changed")
    missing = store.missing_blobs(stored.manifest)
    if missing:
        raise GpulabDataError(f"{name.short}: models_store {root} lacks or holds corrupt "
                              f"{', '.join(layer.digest for layer in missing)}: run `gpulab "
                              f"models fetch {name.short} --store {root}` again\n"
                              "nothing was changed")
    return stored


def _placed(staged: str, dest: str, sha256: str | None, owner: str, stamp: str | None,
            parents: list[str] | None = None) -> str:
    """sh: the staged file owned by ``owner`` and renamed over ``dest`` if its sha256 checks
    out (deleted otherwise, failing the host; ``None``: checked already); ``stamp`` records
    the checked blob; ``parents``: directories made first, in order, owned by ``owner``."""
    quoted, final = shlex.quote(staged), shlex.quote(dest)
    made = (f"install -d -o {owner} -g {owner} -m 755 "
            f"{' '.join(shlex.quote(d) for d in parents)}; " if parents else "")
    mismatch = shlex.quote(f"{dest}: sha256 mismatch after the copy; run the deploy again")
    record = (f"; find {final} -printf '%f %s %T@\\n' >> {shlex.quote(stamp)}"
              if stamp is not None else "")
    check = (f"if ! echo {sha256}'  '{quoted} | sha256sum --check --status --strict; then "
             f"rm -f {quoted}; echo {mismatch} >&2; exit 1; fi; " if sha256 is not None else "")
    return (f"chown {owner}:{owner} {quoted}; chmod 644 {quoted}; {check}{made}"
            f"touch {quoted} && mv -f {quoted} {final}{record}")


def _staged(dest: str, staging_dir: str) -> str:
    return posixpath.join(staging_dir, f".gpulab-{posixpath.basename(dest)}")


@operation()
def verified_file(src: str, dest: str, sha256: str, staging_dir: str,
                  stamp: str | None = None, owner: str = OWNER,
                  parents: list[str] | None = None) -> Generator[str | FileUploadCommand]:
    """``src`` (on this machine) at ``dest`` on the host, only if its sha256 checks out there.

    Uploaded as ``<staging_dir>/.gpulab-<name>``, checked with ``sha256sum``, owned by
    ``owner`` with a fresh mtime, then renamed over ``dest`` (atomic: same filesystem).
    ``stamp``: the store's stamp file, where the checked blob is recorded (no second hash).
    ``parents``: directories ``dest`` needs, made (owned by ``owner``) in the same command.

    .. code:: python

        verified_file(name="blob 2bada8a74506", src="/srv/store/blobs/sha256-2bada8...",
                      dest="/usr/share/ollama/.ollama/models/blobs/sha256-2bada8...",
                      sha256="2bada8...", staging_dir="/usr/share/ollama/.ollama/models/blobs",
                      stamp="/usr/share/ollama/.ollama/models/.gpulab-verified")
    """
    staged = _staged(dest, staging_dir)
    # Always uploaded (the plan found the file lacking; a staged leftover is overwritten), so
    # not through files.put: its fact lookup and separate chown/chmod cost a round trip each
    # per blob, seconds on a slow host. The rest is one command.
    yield FileUploadCommand(src, staged, remote_temp_filename=host.get_temp_filename(staged))
    yield "set -e; " + _placed(staged, dest, sha256, owner, stamp, parents)


@operation()
def verified_download(url: str, dest: str, sha256: str, staging_dir: str,
                      stamp: str | None = None, owner: str = OWNER,
                      proxy: str | None = None, parents: list[str] | None = None
                      ) -> Generator[str]:
    """``url`` (the room cache, or a registry) at ``dest`` on the host, only if its sha256
    checks out.

    Downloaded by the host itself with curl (redirects followed, through ``proxy`` if one),
    resumed (``-C -``) into the staged name, then
    checked, owned, touched and renamed as :func:`verified_file` does. An unreachable cache
    fails this host alone, naming the cache and the URL.

    .. code:: python

        verified_download(name="blob 2bada8a74506",
                          url="http://10.0.0.5/models/blobs/sha256-2bada8...",
                          dest="/usr/share/ollama/.ollama/models/blobs/sha256-2bada8...",
                          sha256="2bada8...", staging_dir="/usr/share/ollama/.ollama/models/blobs")
    """
    staged = shlex.quote(_staged(dest, staging_dir))
    unreachable = shlex.quote(f"{url}: cannot download it")
    via = f"-x {shlex.quote(proxy)} " if proxy else ""
    # An HTTP error (22), such as 416 for a staged file already whole, restarts it next run.
    yield (f"set -e; curl -fsSL --retry 5 --retry-connrefused --connect-timeout 30 {via}"
           f"-C - -o {staged} {shlex.quote(url)} || {{ rc=$?; [ $rc != 22 ] || rm -f {staged}; "
           f"echo {unreachable}\" (curl exit $rc; a partial download is resumed on the next "
           f"run); is the room cache's nginx (or the registry) reachable?\" >&2; exit 1; }}; "
           + _placed(_staged(dest, staging_dir), dest, sha256, owner, stamp, parents))


@operation(is_idempotent=False)
def blobs_sent(store_blobs: str, names: list[str], incoming: str) -> Generator[RsyncCommand]:
    """The blobs ``names`` of the local store directory ``store_blobs`` copied to the host's
    ``incoming`` directory by ``rsync`` over the host's connection (resumed from a partial
    file an interrupted copy left; a file already there whole is not sent again).

    .. code:: python

        blobs_sent(name="qwen2.5:7b: 2 blobs", store_blobs="/srv/store/blobs",
                   names=["sha256-2bada8...", "sha256-66b9ea..."],
                   incoming="/usr/share/ollama/.ollama/models/.gpulab-incoming")
    """
    # Only --include'd names, so the store's own partial or unrelated files never travel.
    only = [f"--include={shlex.quote(name)}" for name in names]
    yield RsyncCommand(shlex.quote(store_blobs.rstrip("/") + "/"), shlex.quote(incoming + "/"),
                       ["-rt", "--partial", *only, "--exclude='*'"])


@operation()
def blobs_placed(staging: str, blobs_dir: str, blobs: list[tuple[str, str | None]],
                 stamp: str, owner: str = OWNER, remove_staging: bool = False
                 ) -> Generator[str]:
    """Blobs staged on the host in ``staging``, each owned by ``owner`` with a fresh mtime and
    renamed into ``blobs_dir`` if its sha256 checks out there, in one command.

    ``blobs``: (file name, sha256 hex) pairs; ``None``: checked already (the swarm's).
    ``remove_staging``: the staging directory goes once every blob is placed.

    .. code:: python

        blobs_placed(name="qwen2.5:7b: 5 blobs placed",
                     staging="/usr/share/ollama/.ollama/models/.gpulab-incoming",
                     blobs_dir="/usr/share/ollama/.ollama/models/blobs",
                     blobs=[("sha256-2bada8...", "2bada8...")],
                     stamp="/usr/share/ollama/.ollama/models/.gpulab-verified",
                     remove_staging=True)
    """
    steps = [_placed(posixpath.join(staging, name), posixpath.join(blobs_dir, name), sha256,
                     owner, stamp) for name, sha256 in blobs]
    if remove_staging:
        steps.append(f"rm -rf {shlex.quote(staging)}")
    yield "set -e; " + "; ".join(steps)


@operation()
def blobs_recorded(models_dir: str, checked: list[str], pulled: bool) -> Generator[str]:
    """The store's stamp lists blobs gpulab has checked, so later runs do not hash them again.

    ``checked``: stamp lines of blobs the store fact hashed and found sound. ``pulled``: this
    run pulled models, so the blobs not yet in the stamp are hashed now and the sound ones
    recorded (Ollama checked those it downloaded; the ones it found on disk were checked
    before the pull, and corrupt ones deleted).

    .. code:: python

        blobs_recorded(models_dir="/usr/share/ollama/.ollama/models",
                       checked=["sha256-2bada8... 4683073952 1733330000.1234567890"],
                       pulled=False)
    """
    stamp = shlex.quote(stamp_path(models_dir))
    if checked:
        yield f"printf '%s\\n' {' '.join(shlex.quote(line) for line in checked)} >> {stamp}"
    if pulled:
        new = shlex.quote(stamp_path(models_dir) + ".new")
        yield (f"{{ {blob_check_command(models_dir)}; }} | "
               f"awk '$5 == \"sound\" {{print $2, $3, $4}}' > {new} && cat {new} >> {stamp} "
               f"&& rm -f {new}")


@operation()
def listed_by_ollama(model: str, api_base: str) -> Generator[str]:
    """The host's running Ollama lists ``model`` in ``GET /api/tags``.

    .. code:: python

        listed_by_ollama(model="qwen2.5:7b", api_base="http://127.0.0.1:11434")
    """
    check = ("import json,sys; names={m['name'] for m in json.load(sys.stdin)['models']}; "
             "sys.exit(0 if sys.argv[1] in names else sys.argv[1]+': copied, but Ollama does "
             "not list it: see journalctl -u ollama')")
    yield (f"curl -fsS --retry 5 --retry-connrefused {shlex.quote(api_base + '/api/tags')} | "
           f"python3 -c {shlex.quote(check)} {shlex.quote(model)}")


@operation()
def pulled(model: str, api_base: str, pull_name: str, insecure: bool) -> Generator[str]:
    """The host's own Ollama pulls ``pull_name`` (``POST /api/pull``), stored as ``model``.

    Runs ``PULL_SCRIPT`` (uploaded by the deploy): the NDJSON stream read to the end, a final
    error line failing the host with its message, network errors retried with backoff, no
    overall timeout. Through a mirror the result is copied to the canonical name.

    .. code:: python

        pulled(model="qwen2.5:7b", api_base="http://127.0.0.1:11434",
               pull_name="http://10.0.0.5:9200/library/qwen2.5:7b", insecure=True)
    """
    command = ["python3", PULL_SCRIPT, api_base, pull_name]
    if insecure:
        command.append("--insecure")
    if parse_model_name(pull_name) != parse_model_name(model):
        command += ["--copy-to", model]
    yield " ".join(shlex.quote(part) for part in command)


def _pull_each(to_bring: list[ModelFit], registry: str, api_base: str, can_run: bool,
               models_dir: str) -> None:
    if not can_run:
        raise GpulabDataError(f"{host.name}: models_distribution: direct needs the host's "
                              "Ollama running (see the Ollama step); use seeded instead\n"
                              "nothing was changed")
    files.template(name="Models: the pull client", src=template("models/ollama-pull.py.j2"),
                   dest=PULL_SCRIPT, mode="755")
    for fit in to_bring:
        name = parse_model_name(fit.name)
        for blob in fit.corrupt_blobs:
            # Ollama would take the corrupt file as already downloaded.
            files.file(name=f"Models: {name.short} corrupt blob {blob[7:19]} removed",
                       path=posixpath.join(models_dir, "blobs", blob), present=False)
        source = name if registry.rstrip("/") == name.base_url else name.through(registry)
        pulled(name=f"Models: pull {name.short}", model=name.short, api_base=api_base,
               pull_name=source.pull_name(), insecure=source.insecure)


@gpulab_deploy("gpulab course models")
def course_models() -> None:
    """Each host gets the course models its plan names (``gpulab plan`` shows them)."""
    settings = host_settings(host)
    swarm = settings.models_distribution == "swarm"
    if swarm and is_room_seed(settings):
        # The room cache only seeds the swarm; the call is the hosts' own (operation order).
        plan, to_bring = None, []
    else:
        plan = host_plan(host)
        if settings.ollama_state == "absent":
            say(name="Models: none", message="ollama_state is absent")
            return
        to_bring = [fit for fit in plan.models if fit.action in ("copy", "pull")]
    if swarm:
        _swarm(settings, plan is None, to_bring)
    if plan is None:
        return
    for fit in plan.models:
        if fit.action == "remove":
            # Like `ollama rm`, by its manifest; Ollama's next start prunes the unused blobs.
            files.file(name=f"Models: {fit.name} removed (models_remove_unlisted)",
                       path=posixpath.join(settings.ollama_models_dir,
                                           parse_model_name(fit.name).manifest_path),
                       present=False)
    store_facts = host_facts(host).model_store
    if not to_bring:
        say(name="Models: present", message=", ".join(f.name for f in plan.models) or "none")
    else:
        _bring(to_bring, settings, plan)
    pulled_now = bool(to_bring) and settings.models_distribution == "direct"
    if store_facts.unstamped or pulled_now:
        blobs_recorded(name="Models: checked blobs recorded",
                       models_dir=settings.ollama_models_dir,
                       checked=list(store_facts.unstamped), pulled=pulled_now)


def _bring(to_bring: list[ModelFit], settings: Settings, plan: HostPlan) -> None:
    """Pull (direct) or copy (seeded) the models the plan lacks on this host."""
    listen = plan.ollama.listen_host
    api_base = (f"http://{'127.0.0.1' if listen in ('0.0.0.0', '::', '') else listen}"
                f":{plan.ollama.listen_port}")
    if settings.models_distribution == "direct":
        _pull_each(to_bring, settings.models_registry, api_base, plan.ollama.service_can_run,
                   settings.ollama_models_dir)
        return
    cache = settings.room_cache_url
    if settings.models_store is None and cache is None:
        raise GpulabDataError(f"{host.name}: models_store: seeded distribution needs the "
                              "instructor's store (gpulab models fetch --store DIR) or a "
                              "room_cache\nnothing was changed")
    source_url = cache + ROOM_CACHE_PATHS["models"] if cache else None
    staging = (staging_dir(settings.ollama_models_dir)
               if settings.models_distribution == "swarm" else None)
    # With a room cache the host downloads from it; otherwise the store is sent over SSH.
    source: Store | str
    if source_url is not None:
        source = source_url
    else:
        assert settings.models_store is not None  # refused above without store or cache
        source = Store(Path(settings.models_store).expanduser())
    for fit in to_bring:
        if settings.models_store is not None:
            model = complete_in_store(settings.models_store, fit.name)
        else:
            assert source_url is not None
            found = _manifest_on_the_cache(source_url, fit.name)
            if found is None:
                continue
            model = found
        copied_from_store(model, source, settings.ollama_models_dir,
                          host_facts(host).model_store, fit.manifest_digest, OWNER,
                          swarm_dir=staging)
        if plan.ollama.service_can_run:
            listed_by_ollama(name=f"Models: Ollama lists {model.name.short}",
                             model=model.name.short, api_base=api_base)
    if staging is not None:
        files.directory(name="Models: the swarm's staging directory removed", path=staging,
                        present=False)


def _swarm(settings: Settings, seed: bool, to_bring: list[ModelFit]) -> None:
    """The swarm round (start, wait, stop) over the course models' blobs, before they are
    placed: on the room cache as the seed, on a host with what it lacks and holds."""
    if settings.models_store is None:
        raise GpulabDataError(f"{host.name}: models_store: swarm distribution needs the "
                              "instructor's store (gpulab models fetch --store DIR)\n"
                              "nothing was changed")
    layers = {layer.file_name: layer for text in settings.models
              for layer in complete_in_store(settings.models_store, text).manifest.blobs}
    held = host_facts(host).model_store if not seed else None
    bring = {layer.file_name for fit in to_bring
             for layer in complete_in_store(settings.models_store, fit.name).manifest.blobs}
    sound = [] if held is None else [name for name, layer in sorted(layers.items())
                                     if held.sound(name, layer.size)]
    swarm_round(settings, seed=seed, blobs=[(name, layers[name].hex) for name in sorted(layers)],
                lacking=bool(bring - set(sound)), held=sound)


def _manifest_on_the_cache(source_url: str, name_text: str) -> StoredModel | None:
    """A model's manifest as the room cache serves it to this host (read as a fact); None,
    with this host refused, when the cache has none."""
    name = parse_model_name(name_text)
    url = f"{source_url}/{name.manifest_path}"
    answer = host.get_fact(RegistryManifest, url=url)
    try:
        data = base64.b64decode(answer or "", validate=True)
        return StoredModel(name, data, parse_manifest(data, url))
    except (binascii.Error, StoreError):
        refused(name=f"Models: {name.short} on the room cache", reason=(
            f"{url}: the room cache has no {name.short} ({answer}): add it to the cache's "
            "models and run deploy/room_cache.py again"))
        return None


def copied_from_store(model: StoredModel, source: Store | str, root: str,
                      held: ModelStoreFacts, held_digest: str | None, owner: str,
                      swarm_dir: str | None = None) -> None:
    """One model of a store into the Ollama-layout store at ``root``.

    Only the blobs ``held`` lacks move, each checked on the host; the manifest last, when
    its digest differs from ``held_digest``. ``source`` is the instructor's store (sent over
    SSH) or the URL of a store the room cache serves over HTTP (downloaded by the host
    itself). ``swarm_dir``: where the swarm left the blobs, checked (the manifest still comes
    from ``source``).
    """
    blobs_dir = posixpath.join(root, "blobs")
    for level in ("blobs", "manifests"):
        files.directory(name=f"Models: {root}/{level}/", path=posixpath.join(root, level),
                        user=owner, group=owner, mode="755")
    stamp = stamp_path(root)
    lacking = [layer for layer in model.manifest.blobs
               if not held.sound(layer.file_name, layer.size)]
    label = model.name.short
    if swarm_dir is not None and lacking:
        blobs_placed(name=f"Models: {label}: {_blobs(lacking)} placed from the swarm",
                     staging=posixpath.join(swarm_dir, "blobs"), blobs_dir=blobs_dir,
                     blobs=[(layer.file_name, None) for layer in lacking], stamp=stamp,
                     owner=owner)
    elif isinstance(source, Store) and lacking:
        _sent_by_rsync(label, source, lacking, root, stamp, owner)
    elif isinstance(source, str):
        for layer in lacking:
            verified_download(name=f"Models: {label} blob {layer.hex[:12]} from the room cache",
                              url=f"{source}/blobs/{layer.file_name}",
                              dest=posixpath.join(blobs_dir, layer.file_name), sha256=layer.hex,
                              staging_dir=blobs_dir, stamp=stamp, owner=owner)
    if held_digest != model.digest:
        parts = model.name.manifest_path.split("/")
        parents = [posixpath.join(root, *parts[:depth]) for depth in range(2, len(parts))]
        dest = posixpath.join(root, model.name.manifest_path)
        if isinstance(source, Store):
            verified_file(name=f"Models: {label} manifest",
                          src=str(source.root / model.name.manifest_path), dest=dest,
                          sha256=model.digest, staging_dir=blobs_dir, owner=owner,
                          parents=parents)
        else:
            verified_download(name=f"Models: {label} manifest from the room cache",
                              url=f"{source}/{model.name.manifest_path}", dest=dest,
                              sha256=model.digest, staging_dir=blobs_dir, owner=owner,
                              parents=parents)


def _blobs(layers: list[Layer]) -> str:
    """``layers`` for an operation's name: how many, and their short digests."""
    count = f"{len(layers)} blob{'s' if len(layers) > 1 else ''}"
    return f"{count} ({', '.join(layer.hex[:12] for layer in layers)})"


def _sent_by_rsync(label: str, store: Store, lacking: list[Layer], root: str, stamp: str,
                   owner: str) -> None:
    """The ``lacking`` blobs of ``store`` to the host by one rsync, then checked and placed
    in one command."""
    if missing_packages(["rsync"]):
        apt.packages(name="Models: rsync, for the copy from the instructor's store",
                     packages=["rsync"], update=True, no_recommends=True)
    incoming = posixpath.join(root, INCOMING)
    blobs_sent(name=f"Models: {label}: {_blobs(lacking)} sent by rsync",
               store_blobs=str(store.root / "blobs"), incoming=incoming,
               names=[layer.file_name for layer in lacking])
    blobs_placed(name=f"Models: {label}: {_blobs(lacking)} checked and placed",
                 staging=incoming, blobs_dir=posixpath.join(root, "blobs"),
                 blobs=[(layer.file_name, layer.hex) for layer in lacking], stamp=stamp,
                 owner=owner, remove_staging=True)
