"""``mlrun list [KIND]``: every registered component, which plugin gave it, and its parameters.

(Not ``list.py``: a submodule is bound as an attribute of its package, and one named
``list`` would shadow the builtin inside ``mlrun/cli/__init__.py``.)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mlrun.cli.common import add_command, load_registry
from mlrun.cli.output import format_table
from mlrun.errors import EXIT_OK, UsageError, did_you_mean

if TYPE_CHECKING:
    from mlrun.registry import Entry, Registry

EXAMPLES = """\
examples:
  mlrun list
  mlrun list model
  mlrun list optimizer --json
"""


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``list``."""
    parser = add_command(
        subparsers, parent, "list", summary="list registered components",
        description="List every registered component, which plugin gave it, and its parameters.",
        epilog=EXAMPLES,
    )  # fmt: skip
    # Any word: plugins may declare kinds, so the known ones are only known once they load.
    parser.add_argument("kind", nargs="?", metavar="KIND", help="only this kind, e.g. model or optimizer")
    parser.add_argument("--json", action="store_true", help="machine-readable, with parameters")


def run(args: argparse.Namespace) -> int:
    """Print the components (of one kind), as a table or as JSON."""
    registry = load_registry(args)
    if args.kind is not None:
        check_kind(args.kind, registry)
    entries = [e for e in registry if args.kind is None or e.component.kind == args.kind]
    if args.json:
        print(json.dumps([_as_json(e) for e in entries], indent=2))
        return EXIT_OK
    rows = [("KIND", "NAME", "PLUGIN", "SUMMARY")]
    rows += [(e.component.kind, e.component.name, e.plugin.label, e.component.summary) for e in entries]
    for (conflict_kind, name), clashing in sorted(registry.conflicts.items()):
        if args.kind is None or conflict_kind == args.kind:
            labels = " + ".join(sorted(e.plugin.label for e in clashing))
            rows.append((conflict_kind, name, labels, "UNUSABLE: two plugins give this name"))
    print(format_table(rows))
    for info in registry.plugins.failed():
        print(f"\nplugin '{info.name}' ({info.label}) failed to load: {info.error}", file=sys.stderr)
    return EXIT_OK


def check_kind(kind: str, registry: Registry) -> None:
    """Raise a UsageError (exit 2) unless ``kind`` is a kind the registry knows."""
    known = list(_known_kinds(registry))
    if kind not in known:
        raise UsageError(f"unknown kind '{kind}'{did_you_mean(kind, known)} (kinds: {', '.join(known)})")


def _known_kinds(registry: Registry) -> Iterable[str]:
    """Kind names in declaration order; a registry without ``kinds`` only knows the built-in ones."""
    from mlrun import components

    kinds = getattr(registry, "kinds", None)
    return components.KINDS if kinds is None else kinds


def _as_json(entry: Entry) -> dict[str, Any]:
    from mlrun.params import parameters, to_jsonable

    return {
        "kind": entry.component.kind,
        "name": entry.component.name,
        "plugin": entry.plugin.label,
        "summary": entry.component.summary,
        "parameters": [
            {
                "name": p.name,
                "type": p.type_text,
                "required": p.required,
                **({} if p.required else {"default": to_jsonable(p.default)}),
            }
            for p in parameters(entry.component)
        ],
    }
