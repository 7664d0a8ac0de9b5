"""``gpulab models resolve|fetch|import``: course models on the instructor's machine."""

from __future__ import annotations

import argparse
import json
import sys

from gpulab.models.names import ModelNameError, parse_model_name


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


def add_models_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``gpulab models ...``."""
    models = commands.add_parser("models", help="course models: names, fetch once, import")
    verbs = models.add_subparsers(dest="models_command", required=True)

    resolve = verbs.add_parser("resolve", help="a model name's parts and manifest path")
    resolve.add_argument("name", help="an Ollama model name, e.g. qwen2.5:7b")
    resolve.add_argument("--json", action="store_true")
    resolve.set_defaults(func=cmd_resolve)
