"""Reading recipe files and command-line overrides, before any validation.

A recipe file must be a regular UTF-8 TOML file of sane size and depth; an
override is ``key.path=value`` with a TOML value (or a bare word). Every problem
becomes a :class:`~mlrun.errors.UsageError` naming the file or the override.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrun.errors import UsageError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: A recipe larger than this is not a recipe (and /dev/zero would be read forever).
MAX_RECIPE_BYTES = 1 << 20
#: Deepest nesting of tables and arrays a recipe may have; real recipes need about 5.
MAX_NESTING = 32


def read_recipe_file(path: Path) -> dict[str, Any]:
    """Parse a TOML recipe file; any reading or syntax problem becomes a :class:`UsageError`."""
    if path.is_symlink() and not path.exists():
        raise UsageError(_broken_link(path))
    if not path.exists():
        hint = ""
        if path.suffix != ".toml" and path.with_suffix(".toml").exists():
            hint = f" — did you mean {path.with_suffix('.toml')}?"
        elif path.parent.is_dir():
            siblings = [p.name for p in path.parent.glob("*.toml")]
            hint = did_you_mean(path.name, siblings).replace("'", "")
            hint = hint.replace("mean ", f"mean {path.parent}/") if hint else ""
        raise UsageError(f"{path}: no such recipe file{hint}")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; give a recipe file such as recipes/summary.toml")
    data = _read_limited(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the recipe as UTF-8"
        ) from exc
    try:
        parsed = tomllib.loads(text)
    except RecursionError:  # tomllib recurses per nesting level; keep the file's name in the error
        raise UsageError(_too_deep(str(path))) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        where = f"{path}:{found.group(1)}:{found.group(2)}" if found else str(path)
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise UsageError(f"{where}: TOML syntax error: {reason}") from exc
    if nesting(parsed) > MAX_NESTING:  # validation, JSON and TOML output all recurse too
        raise UsageError(_too_deep(str(path)))
    return parsed


def _broken_link(path: Path) -> str:
    """Describe a symbolic link that leads nowhere: dangling, or a loop."""
    try:
        target = os.readlink(path)
    except OSError:  # pragma: no cover - it was a link a moment ago
        target = "?"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path}: symbolic link loop ({path} -> {target} -> ...); point it at a recipe file"
    return f"{path}: broken symbolic link (points to {target}, which does not exist); fix or remove the link"


def _read_limited(path: Path) -> bytes:
    """The file's bytes, refusing devices, pipes and anything over MAX_RECIPE_BYTES before reading."""
    limit = f"{MAX_RECIPE_BYTES // (1 << 20)} MiB"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the recipe ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(
                f"{path}: is not a regular file (a device, pipe or socket); "
                "give a recipe file such as recipes/summary.toml"
            )
        if info.st_size > MAX_RECIPE_BYTES:
            raise UsageError(f"{path}: is {info.st_size} bytes; a recipe is at most {limit}: is this the right file?")
        try:
            # At most one byte past the limit: a file that grows (or lies about its size) stops here.
            data = handle.read(MAX_RECIPE_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"{path}: cannot read the recipe ({exc.strerror})") from exc
    if len(data) > MAX_RECIPE_BYTES:
        raise UsageError(f"{path}: is over {limit}; a recipe is at most {limit}: is this the right file?")
    return data


def nesting(value: Any) -> int:
    """How deeply tables and arrays nest in ``value`` (a scalar is 0); iterative, so any depth is safe."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            break  # the answer is already "too deep"
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(where: str) -> str:
    return f"{where}: nested too deeply (tables or arrays over {MAX_NESTING} levels); a recipe needs only a few"


# --------------------------------------------------------------------------- overrides


@dataclass(frozen=True)
class Override:
    """One ``key.path=value`` from the command line."""

    text: str
    path: tuple[str, ...]
    value: Any


def parse_override(text: str) -> Override:
    """Parse ``key.path=value``; the value is read as TOML, or else taken as a bare string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"override '{text}': expected key.path=value, e.g. optimizer.lr=0.003 or train.epochs=1")
    path = tuple(key.split("."))
    if any(not part for part in path):
        raise UsageError(f"override '{text}': empty part in key path '{key}'")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except RecursionError:
        raise UsageError(_too_deep(f"override '{text}'")) from None
    except tomllib.TOMLDecodeError:
        if not re.fullmatch(r"[^\s\"'\[\]{}=,#]+", raw):
            raise UsageError(
                f"override '{text}': '{raw}' is not a TOML value; quote strings (key='a b'), write lists as [1, 2]"
            ) from None
        value = raw  # a bare word such as cpu, mlp or a path: taken as a string
    # The key path and the value together bound how deep the override makes the recipe.
    if len(path) + nesting(value) > MAX_NESTING:
        raise UsageError(_too_deep(f"override '{text}'"))
    return Override(text, path, value)


def apply_overrides(data: dict[str, Any], overrides: Sequence[Override]) -> dict[tuple[str, ...], str]:
    """Set each override in the raw recipe; return which key paths came from which override."""
    origins: dict[tuple[str, ...], str] = {}
    for override in overrides:
        node: Any = data
        for depth, part in enumerate(override.path[:-1]):
            so_far = ".".join(override.path[: depth + 1])
            if isinstance(node, list):
                node = node[_list_index(override, part, node, so_far)]
            elif isinstance(node, dict):
                if part not in node:  # the override creates this table: problems in it are its own
                    origins[override.path[: depth + 1]] = override.text
                node = node.setdefault(part, [] if part == "transforms" and depth == 0 else {})
            else:
                raise UsageError(f"override '{override.text}': {so_far} is a value, not a table")
        last = override.path[-1]
        if isinstance(node, list):
            node[_list_index(override, last, node, ".".join(override.path))] = override.value
        elif isinstance(node, dict):
            node[last] = override.value
        else:
            raise UsageError(f"override '{override.text}': {'.'.join(override.path[:-1])} is a value, not a table")
        origins[override.path] = override.text
    return origins


def _list_index(override: Override, part: str, items: list[Any], where: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise UsageError(
            f"override '{override.text}': {where}: index must be 0..{len(items) - 1} "
            f"(the list has {len(items)} entries)"
        )
    return int(part)


def merge(data: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Merge ``extra`` into ``data`` in place: tables deeply, any other value replaced."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            merge(data[key], value)
        else:
            data[key] = value
