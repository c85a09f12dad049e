"""``mlrun list [KIND]``: every registered component, which plugin gave it, and its parameters.

(Not ``list.py``: a submodule is bound as an attribute of its package, and one named
``list`` would shadow the builtin inside ``mlrun/cli/__init__.py``.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mlrun.cli.common import add_command, load_registry
from mlrun.cli.output import format_table
from mlrun.errors import EXIT_OK, UsageError, did_you_mean

if TYPE_CHECKING:
    from mlrun.components import Component  # noqa: F401 - also imported where it is needed at run time
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
    """Print the components (of one kind), as a table or as JSON; plugin problems go to stderr."""
    registry = load_registry(args)
    if args.kind is not None:
        check_kind(args.kind, registry)
    entries = [e for e in registry.everything() if args.kind is None or e.component.kind == args.kind]
    if args.json:
        print(json.dumps([_as_json(e, registry) for e in entries], indent=2))
    else:
        rows = [("KIND", "NAME", "PLUGIN", "SUMMARY")]
        rows += [(e.component.kind, _listed_name(e, registry), e.plugin.label, _summary(e, registry)) for e in entries]
        print(format_table(rows))
    for info in registry.plugins.infos.values():
        if info.status == "failed":
            print(f"\nplugin '{info.name}' ({info.label}) failed to load: {info.error}", file=sys.stderr)
        elif info.status == "partly loaded":
            refused = "".join(f"\n  {p.text}" for p in info.problems)
            print(f"\nplugin '{info.name}' ({info.label}) is partly loaded; refused:{refused}", file=sys.stderr)
    return EXIT_OK


def _clashes(entry: Entry, registry: Registry) -> list[str]:
    """The qualified names of the other plugins' components with this entry's name."""
    others = registry.conflicts.get((entry.component.kind, entry.component.name), [])
    return sorted(o.qualified_name for o in others if o is not entry)


def _listed_name(entry: Entry, registry: Registry) -> str:
    """What a recipe writes to choose the component: the qualified name when the plain one clashes."""
    return entry.qualified_name if _clashes(entry, registry) else entry.component.name


def _summary(entry: Entry, registry: Registry) -> str:
    clashes = _clashes(entry, registry)
    if not clashes:
        return entry.component.summary
    return f"{entry.component.summary} (also from {', '.join(clashes)}: name it '{entry.qualified_name}')"


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


#: Keys every ``list --json`` object has; a plugin kind's descriptor field never replaces one.
JSON_KEYS = ("kind", "name", "plugin", "summary", "qualified_name", "use_as", "clashes_with", "parameters")


def _as_json(entry: Entry, registry: Registry) -> dict[str, Any]:
    from mlrun.components import OUTPUT_KINDS
    from mlrun.descriptor_checks import literal_values
    from mlrun.params import parameters, to_jsonable

    clashes = _clashes(entry, registry)
    found: dict[str, Any] = {
        "kind": entry.component.kind,
        "name": entry.component.name,
        "plugin": entry.plugin.label,
        "summary": entry.component.summary,
        "qualified_name": entry.qualified_name,
        "use_as": entry.qualified_name if clashes else entry.component.name,
        "clashes_with": clashes,
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
    for key, value in descriptor_fields(entry.component).items():
        found.setdefault(key, value)
    output = getattr(entry.component, "output", None)
    if output is not None and output not in OUTPUT_KINDS:  # set by a parameter: which kinds it can take
        choice = next((p for p in parameters(entry.component) if p.name == output), None)
        found.setdefault("outputs", list(literal_values(choice.annotation) or ()) if choice else [])
    return found


def descriptor_fields(component: Component) -> dict[str, Any]:
    """The descriptor's own fields (output, expects, random, ...): a function shows as whether it is there."""
    from mlrun.components import Component
    from mlrun.params import to_jsonable

    base = {f.name for f in dataclasses.fields(Component)} - {"validate"}
    return {
        f.name: (getattr(component, f.name) is not None) if _holds_function(component, f.name)
        else to_jsonable(getattr(component, f.name))
        for f in dataclasses.fields(component) if f.name not in base
    }  # fmt: skip


def _holds_function(component: Component, name: str) -> bool:
    value = getattr(component, name)
    return callable(value) or (value is None and "Callable" in str(component.__dataclass_fields__[name].type))
