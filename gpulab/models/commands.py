"""``gpulab models resolve|fetch|import``: course models on the instructor's machine."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gpulab.models.names import ModelName, ModelNameError, parse_model_name
from gpulab.models.registry import RegistryClient, RegistryError
from gpulab.models.store import Store, StoreError


def cmd_resolve(args: argparse.Namespace) -> int:
    """The parts of a model name and where its manifest lives in a store."""
    try:
        name = parse_model_name(args.name)
    except ModelNameError as error:
        print(f"gpulab models resolve: {error}", file=sys.stderr)
        return 1
    parts = {"host": name.host, "namespace": name.namespace, "model": name.model,
             "tag": name.tag, "manifest": name.manifest_path}
    if args.json:
        print(json.dumps({**parts, "scheme": name.scheme, "short": name.short},
                         indent=2, sort_keys=True))
    else:
        print(f"{name.short}: {name.base_url}/{name.namespace}/{name.model}:{name.tag}")
        print(f"  manifest: {name.manifest_path}")
    return 0


def _wanted(args: argparse.Namespace) -> tuple[list[str], str]:
    """The model names and registry to fetch: the arguments, else the inventory's data."""
    from gpulab.settings import Settings

    if args.inventory:
        from gpulab.cli import inventory_settings

        hosts = inventory_settings(args.inventory, None).values()
        names = list(dict.fromkeys(name for host in hosts for name in host.models))
        registries = sorted({host.models_registry for host in hosts})
        if len(registries) > 1 and not args.registry:
            raise ValueError("hosts name different models_registry values "
                             f"({', '.join(registries)}): pass --registry")
        registry = registries[0] if registries else Settings().models_registry
    else:
        names, registry = list(Settings().models), Settings().models_registry
    return (args.names or names), (args.registry or registry)


@contextmanager
def _progress() -> Iterator[RegistryClient]:
    """A client whose downloads draw rich progress bars on a terminal, and nothing elsewhere."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                  disable=not console.is_terminal) as progress:
        tasks: dict[str, TaskID] = {}

        def on_bytes(digest: str, done: int, total: int) -> None:
            if digest not in tasks:
                tasks[digest] = progress.add_task(digest[7:19], total=total)
            progress.update(tasks[digest], completed=done)

        yield RegistryClient(on_bytes=on_bytes)


def cmd_fetch(args: argparse.Namespace) -> int:
    """Fill a store from the registry once, for the whole room."""
    texts, registry = _wanted(args)
    names: list[ModelName] = []
    for text in texts:
        try:
            names.append(parse_model_name(text))
        except ModelNameError as error:
            print(f"gpulab models fetch: {error}", file=sys.stderr)
            return 1
    store = Store(Path(args.store))
    failed = 0
    with _progress() as client:
        for name in names:
            mirror = None if registry.rstrip("/") == name.base_url else registry
            try:
                result = client.fetch(store, name, mirror)
            except (RegistryError, StoreError, OSError) as error:
                print(f"{name.short}: {error}", file=sys.stderr)
                failed += 1
                continue
            print(f"{name.short}: complete in {store.root} ({result.downloaded_bytes} bytes "
                  f"downloaded, {len(result.fetched_blobs)} blob(s))")
    return 1 if failed else 0


def cmd_import(args: argparse.Namespace) -> int:
    """Take models from an existing Ollama store (a USB stick, ~/.ollama/models)."""
    source, store = Store(Path(args.source)), Store(Path(args.store))
    try:
        wanted = {parse_model_name(text) for text in args.names}
    except ModelNameError as error:
        print(f"gpulab models import: {error}", file=sys.stderr)
        return 1
    failed, found = 0, set()
    for stored in source.models():
        if wanted and stored.name not in wanted:
            continue
        found.add(stored.name)
        try:
            copied = store.import_model(source, stored)
        except (StoreError, OSError) as error:
            print(f"{stored.name.short}: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{stored.name.short}: complete in {store.root} ({copied} bytes copied)")
    for name in sorted(wanted - found, key=lambda n: n.short):
        print(f"{name.short}: not in {source.root} (no {name.manifest_path})", file=sys.stderr)
        failed += 1
    if not found and not wanted:
        print(f"gpulab models import: {source.root} holds no models (no manifests/*/*/*/*)",
              file=sys.stderr)
        return 1
    return 1 if failed else 0


def add_models_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``gpulab models ...``."""
    models = commands.add_parser("models", help="course models: names, fetch once, import")
    verbs = models.add_subparsers(dest="models_command", required=True)

    resolve = verbs.add_parser("resolve", help="a model name's parts and manifest path")
    resolve.add_argument("name", help="an Ollama model name, e.g. qwen2.5:7b")
    resolve.add_argument("--json", action="store_true")
    resolve.set_defaults(func=cmd_resolve)

    fetch = verbs.add_parser("fetch", help="download models once into a store for the room")
    fetch.add_argument("names", nargs="*", metavar="NAME",
                       help="models (default: the inventory's `models`, else gpulab's)")
    fetch.add_argument("--inventory", help="take `models` and `models_registry` from it")
    fetch.add_argument("--store", required=True, help="the store folder (Ollama's layout)")
    fetch.add_argument("--registry", help="a registry or mirror, e.g. http://10.0.0.5:9200")
    fetch.set_defaults(func=cmd_fetch)

    imp = verbs.add_parser("import", help="take models from an existing Ollama store")
    imp.add_argument("source", metavar="DIR", help="an Ollama models folder (blobs/, manifests/)")
    imp.add_argument("names", nargs="*", metavar="NAME", help="only these models")
    imp.add_argument("--store", required=True, help="the store folder to fill")
    imp.set_defaults(func=cmd_import)
