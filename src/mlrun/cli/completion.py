"""Shell completion (argcomplete): commands, options, recipe paths, kinds, component names, override keys.

Install it with ``eval "$(register-python-argcomplete mlrun)"`` (bash; zsh with
``autoload -U bashcompinit && bashcompinit`` first). The shell then runs ``mlrun``
with ``_ARGCOMPLETE`` set; :func:`complete` answers and exits before anything else runs.

The command line is read the way :func:`mlrun.cli.main` reads it: ``mlrun RECIPE``
means ``mlrun run RECIPE``, and ``key.path=value`` overrides may stand anywhere.
Override keys come from the recipe on the line (its bases included), the parameters
of the components it (or an override on the line) chooses, and the ``[train]``
settings: ``mlrun recipes/summary.toml optimizer.l<TAB>`` gives ``optimizer.lr=``.
Names come from :mod:`mlrun.catalog`, cached, so a completion does not import torch.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import argcomplete
from argcomplete.completers import DirectoriesCompleter, FilesCompleter

#: Positionals and options whose values are folders.
FOLDERS = {"run_dir", "folder", "resume", "dir", "data", "out"}
TRAIN = "train"


class Finder(argcomplete.CompletionFinder):
    """argcomplete's finder, reading the line as ``mlrun`` does (default command, overrides anywhere)."""

    def __init__(
        self, *args: Any, commands: Mapping[str, argparse.ArgumentParser] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        # argcomplete calls __init__ again when it answers, without our arguments: keep them then.
        if commands is not None or not hasattr(self, "commands"):
            self.commands = dict(commands or {})
        #: The ``key=value`` words before the cursor: argparse never sees them, the key completer does.
        self.line_overrides: list[str] = getattr(self, "line_overrides", [])

    def _init_debug_stream(self) -> None:
        """argcomplete's debug lines (``_ARC_DEBUG``) go to stderr: fd 9 may be anything in a test process."""
        argcomplete.io.debug_stream = sys.stderr

    def _get_completions(self, comp_words: list[str], cword_prefix: str, *rest: Any) -> list[str]:
        from mlrun.cli import OVERRIDE

        words = comp_words[1:]
        self.line_overrides = [w for w in words if OVERRIDE.match(w)]
        words = [w for w in words if not OVERRIDE.match(w)]
        first = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
        if first is not None:
            if words[first] not in self.commands:
                words.insert(first, "run")  # `mlrun RECIPE` is `mlrun run RECIPE`
            words[first + 1 :] = _options_first(words[first + 1 :], self.commands.get(words[first]))
        return list(super()._get_completions([comp_words[0], *words], cword_prefix, *rest))

    def collect_completions(self, active_parsers: Any, parsed_args: Any, cword_prefix: str) -> list[str]:
        """argcomplete's completions; at the first word, recipe files too (``mlrun RECIPE`` runs it)."""
        completions = list(super().collect_completions(active_parsers, parsed_args, cword_prefix))
        if len(active_parsers) == 1 and not cword_prefix.startswith("-"):
            completions += [c for c in recipe_files(cword_prefix) if c not in completions]
        return completions


def _options_first(words: list[str], parser: argparse.ArgumentParser | None) -> list[str]:
    """A command's words with its options (and their values) first, so argparse leaves the positionals open.

    ``mlrun run RECIPE --data DIR key=`` would otherwise end the overrides at ``--data``.
    An option still waiting for its value stays last: that value is being completed.
    """
    if parser is None:
        return words
    options: list[str] = []
    positionals: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        action = parser._option_string_actions.get(word)
        if action is None:
            (options if word.startswith("-") else positionals).append(word)
            index += 1
            continue
        takes = 0 if action.nargs == 0 else 1
        if index + takes >= len(words):
            return [*options, *positionals, *words[index:]]
        options += words[index : index + 1 + takes]
        index += 1 + takes
    return [*options, *positionals]


def complete(parser: argparse.ArgumentParser, **kwargs: Any) -> None:
    """Answer the shell's completion request for ``parser`` (the argcomplete protocol), then exit."""
    finder = Finder(commands=_subparsers(parser))
    attach(parser, finder)
    finder(parser, always_complete_options=False, **{"exit_method": sys.exit, **kwargs})


def completions(parser: argparse.ArgumentParser, line: str, point: int | None = None) -> list[str]:
    """What the shell gets for ``line`` with the cursor at ``point`` (default: the end); for tests."""
    from argcomplete.lexers import split_line

    finder = Finder(parser, always_complete_options=False, commands=_subparsers(parser))
    attach(parser, finder)
    prequote, prefix, _suffix, words, wordbreak = split_line(line, len(line) if point is None else point)
    return finder._get_completions(words, prefix, prequote, wordbreak)


def attach(parser: argparse.ArgumentParser, finder: Finder) -> None:
    """Give each argument of each command its completer, by what it holds."""
    for name, sub in _subparsers(parser).items():
        for action in sub._actions:
            completer: Any = None
            if action.dest == "recipe":
                completer = _recipe_files
            elif action.dest == "overrides":
                completer = OverrideCompleter(finder)
            elif action.dest == "kind" and name == "list":
                completer = _kinds
            elif action.dest in FOLDERS:
                completer = DirectoriesCompleter()
            if completer is not None:
                action.completer = completer  # type: ignore[attr-defined]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def recipe_files(prefix: str) -> list[str]:
    """Folders and ``.toml`` files that start with ``prefix``."""
    return list(FilesCompleter(allowednames=("toml",), directories=True)(prefix))


def _recipe_files(prefix: str, **_: Any) -> list[str]:
    return recipe_files(prefix)


def _kinds(prefix: str, **_: Any) -> list[str]:
    return [kind for kind in catalog()["kinds"] if kind.startswith(prefix)]


def catalog() -> dict[str, Any]:
    """The installed components' names (cached; see :mod:`mlrun.catalog`); the built-in kinds if that fails."""
    from mlrun.catalog import load_catalog

    try:
        return load_catalog()
    except Exception:  # noqa: BLE001 - a completion never fails loudly: offer less
        from mlrun.components import KINDS

        kinds = {kind: {"section": cls.section, "many": cls.many} for kind, cls in KINDS.items()}
        return {"kinds": kinds, "components": {}, "train": {}}


class OverrideCompleter:
    """``key.path=`` for the recipe on the line; after the ``=``, the values the key can take."""

    def __init__(self, finder: Finder) -> None:
        self.finder = finder

    def __call__(self, prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
        """The completions of one override word."""
        data = recipe_data(_recipe_path(parsed_args), self.finder.line_overrides)
        key, equals, value = prefix.partition("=")
        if equals:
            return [f"{key}={v}" for v in values(key, data, catalog()) if v.startswith(value)]
        return [k for k in keys(data, catalog()) if k.startswith(prefix)]


def _recipe_path(args: argparse.Namespace) -> Path | None:
    """The recipe the line is about: RECIPE, or the run folder's own (``mlrun resume RUN_DIR``)."""
    if getattr(args, "recipe", None):
        return Path(args.recipe)
    if getattr(args, "run_dir", None):
        return Path(args.run_dir) / "recipe.toml"
    return None


def recipe_data(path: Path | None, overrides: Sequence[str]) -> dict[str, Any]:
    """The recipe's data with its bases and the line's overrides; what cannot be read is left out."""
    from mlrun.errors import UsageError
    from mlrun.recipe_extends import compose
    from mlrun.recipe_file import apply_overrides, parse_override

    data: dict[str, Any] = {}
    if path is not None and path.is_file():
        with contextlib.suppress(UsageError):
            data = compose(path).data
    for text in overrides:
        with contextlib.suppress(UsageError, IndexError, TypeError):
            apply_overrides(data, [parse_override(text)])
    return data


def _tables(data: Mapping[str, Any], catalog: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(key prefix, kind, table)`` for each component table: ``model``, ``transforms.0``, ...; unnamed ones too."""
    found: list[tuple[str, str, Mapping[str, Any]]] = []
    for kind, info in catalog["kinds"].items():
        section = info["section"]
        value = data.get(section)
        if info["many"]:
            items = value if isinstance(value, list) else []
            found += [(f"{section}.{i}", kind, item if isinstance(item, dict) else {}) for i, item in enumerate(items)]
        else:
            found.append((section, kind, value if isinstance(value, dict) else {}))
    return found


def keys(data: Mapping[str, Any], catalog: Mapping[str, Any]) -> list[str]:
    """Every ``key=`` an override of this recipe may set: names, the chosen components' parameters, settings."""
    found: list[str] = []
    for where, kind, table in _tables(data, catalog):
        params = catalog["components"].get(kind, {}).get(table.get("name"), {})
        names = ["name", *params, *(k for k in table if k not in params and k != "name")]
        found += [f"{where}.{name}=" for name in names]
    raw_train = data.get(TRAIN)
    train: Mapping[str, Any] = raw_train if isinstance(raw_train, dict) else {}
    found += [f"{TRAIN}.{name}=" for name in [*catalog["train"], *(k for k in train if k not in catalog["train"])]]
    return found


def values(key: str, data: Mapping[str, Any], catalog: Mapping[str, Any]) -> list[str]:
    """The values ``key`` can take, when they are a few words: component names, choices, true/false."""
    path = key.split(".")
    if path[0] == TRAIN and len(path) == 2:
        return list(catalog["train"].get(path[1], []))
    for where, kind, table in _tables(data, catalog):
        if key.startswith(where + ".") and key.count(".") == where.count(".") + 1:
            name = path[-1]
            if name == "name":
                return list(catalog["components"].get(kind, {}))
            return list(catalog["components"].get(kind, {}).get(table.get("name"), {}).get(name, []))
    return []
