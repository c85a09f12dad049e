"""Helpers the command modules share: subparser set-up, the registry, the data folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def load_registry(args: argparse.Namespace) -> Registry:
    """Load the plugins (honouring --strict-plugins) and collect their components."""
    from mlrun.plugins import PluginSettings, load_plugins
    from mlrun.registry import build_registry

    return build_registry(load_plugins(PluginSettings.from_env(strict=args.strict_plugins)))


def data_override(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--data DIR`` as recipe data; absolute, so that the run folder's recipe finds the data from anywhere."""
    return {"dataset": {"root": str(Path(args.data).expanduser().resolve())}} if args.data else None
