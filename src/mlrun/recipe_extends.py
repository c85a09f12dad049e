"""Recipes that compose: ``extends = "base.toml"`` (or a list), and where each key came from.

A recipe may start with ``extends``: one file or a list, each path relative to the
recipe's own folder. The bases are merged first, in order, then the recipe itself:
tables merge deeply, any other value (a list such as ``transforms`` included) is
replaced whole, and later files win. Command-line overrides win over every file.

Only TOML files are read (through :func:`mlrun.recipe_file.read_recipe_file`, with
its limits on size and depth); nothing is imported. A missing base, a cycle or a
base that does not parse is reported with the chain of files that led to it, and a
bad key a base gives is reported under that base's name (see :func:`file_label`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlrun.errors import UsageError
from mlrun.recipe_file import MAX_NESTING, apply_overrides, merge, parse_override, read_recipe_file

#: The top-level key that names a recipe's bases.
EXTENDS = "extends"
#: Most files one recipe may be composed of (each base counted every time it is merged).
MAX_FILES = 64

#: A key path, as the recipe checks spell it: ``("optimizer", "lr")``.
KeyPath = tuple[str, ...]


@dataclass
class Composed:
    """A recipe merged with its bases: the data, and for each key path the file that set it last."""

    data: dict[str, Any]
    #: Key path -> the label of the file that set it (tables, leaves and whole lists alike).
    sources: dict[KeyPath, str] = field(default_factory=dict)
    #: Every file read, in merge order (the recipe itself last).
    files: list[Path] = field(default_factory=list)


def file_label(path: Path, chain: Sequence[Path]) -> str:
    """How problems name a file: the recipe as given, a base with the chain that extends it."""
    shown = os.path.normpath(path)
    if not chain:
        return str(path)
    return f"{shown} (extended by {', extended by '.join(os.path.normpath(p) for p in reversed(chain))})"


def compose(path: Path) -> Composed:
    """Read ``path`` and every file it extends, merged (bases first); raises :class:`UsageError`."""
    composed = Composed({})
    _compose_into(composed, Path(path), chain=[])
    composed.data.pop(EXTENDS, None)
    return composed


def _compose_into(composed: Composed, path: Path, chain: list[Path]) -> None:
    """Merge ``path``'s bases, then ``path`` itself, into ``composed``; ``chain``: the files extending it."""
    label = file_label(path, chain)
    if len(composed.files) >= MAX_FILES or len(chain) >= MAX_NESTING:
        raise UsageError(
            f"{label}: extends too many files (over {MAX_FILES} in all, or {MAX_NESTING} deep); "
            "a recipe needs a few bases"
        )
    try:
        data = read_recipe_file(path)
    except UsageError as exc:
        if not chain:
            raise
        raise UsageError(f"{exc} (extended by {_chain_text(chain)})", problems=exc.problems) from None
    _misplaced(data, label)
    for base in _bases(data.get(EXTENDS), path, label):
        if any(_same_file(base, seen) for seen in (*chain, path)):
            loop = " -> ".join(os.path.normpath(p) for p in (*chain, path, base))
            raise UsageError(f"{label}: extends: a cycle ({loop}); remove one of these extends")
        _compose_into(composed, base, [*chain, path])
    data.pop(EXTENDS, None)
    _merge(composed.data, data, (), label, composed.sources)
    composed.files.append(path)


def _misplaced(data: Mapping[str, Any], label: str) -> None:
    """``extends`` written after a table header belongs to that table: say where it must go."""
    for section, table in data.items():
        value = table.get(EXTENDS) if isinstance(table, dict) else None
        names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        if names and all(isinstance(n, str) and n.endswith(".toml") for n in names):
            raise UsageError(
                f"{label}: {section}.{EXTENDS}: extends belongs at the top of the file, before the first "
                f"[table] (after [{section}] it is a key of that table): move it up"
            )


def _bases(value: Any, path: Path, label: str) -> list[Path]:
    """The files an ``extends`` value names, relative to the recipe's folder."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise UsageError(
            f'{label}: extends: expected a file name or a list of them, e.g. extends = "base.toml" '
            'or extends = ["base.toml", "wide.toml"]'
        )
    bases = []
    for name in names:
        base = path.parent / Path(name).expanduser()
        if not base.exists() and not base.is_symlink():
            raise UsageError(
                f"{label}: extends: {os.path.normpath(base)}: no such recipe file "
                f"(paths in extends are relative to {os.path.normpath(path.parent)})"
            )
        bases.append(base)
    return bases


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a link loop: read_recipe_file reports it
        return False


def _chain_text(chain: Sequence[Path]) -> str:
    return ", extended by ".join(os.path.normpath(p) for p in reversed(chain))


def _merge(
    data: dict[str, Any], extra: Mapping[str, Any], prefix: KeyPath, label: str, sources: dict[KeyPath, str]
) -> None:
    """Merge ``extra`` into ``data``: tables deeply, anything else replaced; note the source of each path."""
    for key, value in extra.items():
        path = (*prefix, key)
        sources[path] = label
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            _merge(data[key], value, path, label, sources)
            continue
        for old in [p for p in sources if len(p) > len(path) and p[: len(path)] == path]:
            del sources[old]  # what the replaced value held no longer exists
        if isinstance(value, Mapping):  # a new table (or one replacing a value): its keys get sources too
            data[key] = {}
            _merge(data[key], value, path, label, sources)
        else:
            data[key] = value


def read_recipe(
    path: Path, overrides: Sequence[str] = (), extra_data: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[KeyPath, str], dict[KeyPath, str]]:
    """The raw recipe data (bases, ``extra_data``, then overrides merged) with where its keys came from.

    Returns ``(data, origins, sources)``: ``origins`` maps key paths to the override
    that set them, ``sources`` to the file (see :func:`file_label`).
    """
    composed = compose(path)
    if extra_data:  # given with the command (--data): problems in it are the recipe's own, as without bases
        merge(composed.data, extra_data)
        composed.sources.update({key: str(path) for key, _ in leaves(extra_data)})
    origins = apply_overrides(composed.data, [parse_override(o) for o in overrides])
    return composed.data, origins, without_overridden(composed.sources, list(origins))


def without_overridden(sources: Mapping[KeyPath, str], overridden: Sequence[KeyPath]) -> dict[KeyPath, str]:
    """The file sources of the keys no override replaced (an override of a table replaces all of it)."""
    return {
        path: label
        for path, label in sources.items()
        if not any(path[: len(key)] == key and len(path) > len(key) for key in overridden)
    }


# --------------------------------------------------------------------------- --explain


def lookup(data: Any, path: KeyPath) -> tuple[bool, Any]:
    """Whether ``path`` is in the raw recipe data (list entries by index), and its value."""
    node = data
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def source_of(path: KeyPath, sources: Mapping[KeyPath, str]) -> str | None:
    """The source of the longest prefix of ``path`` that has one."""
    for n in range(len(path), 0, -1):
        if path[:n] in sources:
            return sources[path[:n]]
    return None


def leaves(value: Any, prefix: KeyPath = ()) -> list[tuple[KeyPath, Any]]:
    """Every key path of a resolved recipe down to its values (a list of tables by index)."""
    if isinstance(value, Mapping):
        return [leaf for key, item in value.items() for leaf in leaves(item, (*prefix, str(key)))]
    if isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
        return [leaf for index, item in enumerate(value) for leaf in leaves(item, (*prefix, str(index)))]
    return [(prefix, value)]


def explain(
    resolved: Mapping[str, Any],
    path: Path,
    overrides: Sequence[str] = (),
    extra_data: Mapping[str, Any] | None = None,
    extra_label: str = "--data",
) -> list[tuple[str, Any, str]]:
    """``(key, value, source)`` for each key of a resolved recipe: the file or override that set it, or "default".

    ``resolved`` is :meth:`mlrun.recipe.Recipe.to_dict` of the recipe read from ``path``
    with ``overrides`` and ``extra_data`` (whose keys are said to come from ``extra_label``).
    """
    raw, origins, sources = read_recipe(path, overrides, extra_data)
    labels = dict(sources)
    labels.update({key: extra_label for key, _ in leaves(extra_data or {})})
    labels.update({key: f"override '{text}'" for key, text in origins.items()})
    rows = []
    for key, value in leaves(resolved):
        found, _ = lookup(raw, key)
        rows.append((".".join(key), value, (source_of(key, labels) if found else None) or "default"))
    return rows
