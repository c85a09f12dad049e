"""Helpers the command modules share: subparser set-up, the registry, the data folder."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlrun.plugins import PluginInfo
    from mlrun.registry import Registry


def add_command(
    subparsers: Any, parent: argparse.ArgumentParser, name: str, *, summary: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    """A subcommand's parser: the shared options of ``parent``, examples printed as written."""
    return subparsers.add_parser(
        name, help=summary, description=description, epilog=epilog, parents=[parent],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """``--data DIR``, for the commands that load a recipe."""
    parser.add_argument("--data", metavar="DIR", help="dataset root folder (sets dataset.root)")


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """RECIPE, KEY=VALUE overrides and --data: what ``run`` and ``check`` take."""
    parser.add_argument("recipe", help="path to a TOML recipe, e.g. recipes/summary.toml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override recipe values")
    add_data_option(parser)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``RUN_DIR`` and ``--weights best|final``: what the commands reading a trained run take first."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    parser.add_argument(
        "--weights", choices=("best", "final"), default=None,
        help="best.pt (the best epoch by train.monitor) or model.pt (the final weights); default: best when present",
    )  # fmt: skip


def load_registry(args: argparse.Namespace, *, run_dir: str | Path | None = None) -> Registry:
    """Load the plugins (honouring --strict-plugins) and collect their components.

    With ``--debug``, every plugin failure's traceback goes to stderr first (before a
    strict-mode error, too). ``run_dir``: the run folder a recipe will be read from; an
    unknown component then names the plugins its run.json records that are not installed.
    """
    from mlrun import catalog
    from mlrun.plugins import PluginSettings, load_plugins, raise_if_failed
    from mlrun.registry import build_registry

    settings = PluginSettings.from_env(strict=args.strict_plugins)
    # Strictness is applied once everything is loaded, so --debug can show every traceback first.
    registry = build_registry(load_plugins(dataclasses.replace(settings, strict=False)))
    if getattr(args, "debug", False):
        print_plugin_tracebacks(registry.plugins.infos.values())
    if settings.strict:
        raise_if_failed(registry.plugins)
    catalog.remember(registry)  # the shell's next completion then answers from the cache
    if run_dir is not None:
        registry.remember_run(Path(run_dir))
    return registry


def print_plugin_tracebacks(infos: Iterable[PluginInfo]) -> None:
    """For --debug: the full traceback of every plugin failure, the plugin's own frames included."""
    for info in infos:
        failures = [(info.error, info.details)] if info.error else [(p.text, p.details) for p in info.problems]
        for reason, details in failures:
            if details:
                print(f"plugin '{info.name}' ({info.label}): {reason}\n{details.rstrip()}", file=sys.stderr)


def data_override(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--data DIR`` as recipe data; absolute, so that the run folder's recipe finds the data from anywhere."""
    return {"dataset": {"root": str(Path(args.data).expanduser().resolve())}} if args.data else None
