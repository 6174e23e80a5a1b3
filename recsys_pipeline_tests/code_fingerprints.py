"""What each asset computes, as a fingerprint of source text, so a forgotten `code_version` bump fails a test.

An asset's fingerprint is the SHA-256 of its body's source and of the source of every function and
class of recsys_pipeline that the body reaches by name, followed transitively (`workflow.train_candidate`
-> `two_tower.train_two_tower` -> ...). Comments and docstrings count as source: a change to them
only asks for the table to be recorded again, which is cheap, while a missed change to the code is
what this guards. `code_versions.json` beside this file records each asset's code_version and
fingerprint; after bumping a code_version, record the table again:

    .venv/bin/python -m recsys_pipeline_tests.code_fingerprints --record
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import inspect
import json
import textwrap
from pathlib import Path

import dagster as dg

PACKAGE = "recsys_pipeline"
TABLE = Path(__file__).with_name("code_versions.json")


def _is_ours(value: object) -> bool:
    return (inspect.isfunction(value) or inspect.isclass(value)) and (getattr(value, "__module__", "") or "").startswith(PACKAGE)


def _referenced(function: object) -> list[object]:
    """The functions and classes of the package that `function`'s source names, directly or as `module.name`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    scope = dict(getattr(function, "__globals__", None) or vars(inspect.getmodule(function)))
    # Imports inside the body (the steps import TensorFlow's modules only when they run).
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            module = importlib.import_module(node.module)
            for alias in node.names:
                scope[alias.asname or alias.name] = getattr(module, alias.name, None) or importlib.import_module(f"{node.module}.{alias.name}")
    found = []
    for node in ast.walk(tree):
        value = None
        if isinstance(node, ast.Name):
            value = scope.get(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner = scope.get(node.value.id)
            if inspect.ismodule(owner) and owner.__name__.startswith(PACKAGE):
                value = getattr(owner, node.attr, None)
        if _is_ours(value):
            found.append(value)
    return found


def _has_source(function: object) -> bool:
    try:
        inspect.getsource(function)
    except OSError:
        return False
    return True


def _sources(root: object) -> list[str]:
    """The source of `root` and of everything of the package it reaches, each once, in a stable order."""
    seen: dict[str, str] = {}
    pending = [root]
    while pending:
        item = pending.pop()
        name = f"{item.__module__}.{item.__qualname__}"
        if name in seen or not _has_source(item):  # generated: pydantic's config classes, from settings reached anyway
            continue
        seen[name] = inspect.getsource(item)
        members = [member for _, member in inspect.getmembers(item, inspect.isfunction)] if inspect.isclass(item) else [item]
        for member in members:
            if _is_ours(member) and _has_source(member):  # dataclasses generate __init__ and __eq__ without source
                pending.extend(_referenced(member))
    return [seen[name] for name in sorted(seen)]


def asset_fingerprints(defs: dg.Definitions) -> dict[str, dict[str, str | None]]:
    """Each asset's code_version and fingerprint, by asset key."""
    table = {}
    for key in defs.resolve_asset_graph().get_all_asset_keys():
        assets_def = defs.resolve_assets_def(key)
        body = assets_def.op.compute_fn.decorated_fn
        digest = hashlib.sha256("\n".join(_sources(body)).encode()).hexdigest()
        table[key.to_user_string()] = {"code_version": assets_def.code_versions_by_key[key], "fingerprint": digest}
    return dict(sorted(table.items()))


def current_table() -> dict[str, dict[str, str | None]]:
    from recsys_pipeline.definitions import build_definitions

    return asset_fingerprints(build_definitions("unused-source", Path("unused-data-dir")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help=f"write the current table to {TABLE.name}")
    args = parser.parse_args()
    table = current_table()
    if args.record:
        TABLE.write_text(json.dumps(table, indent=2) + "\n")
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
