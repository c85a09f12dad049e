"""``mlrun check RECIPE``: validate a recipe and print it fully resolved; trains nothing."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mlrun.cli.common import add_command, add_recipe_arguments, data_override, load_registry
from mlrun.errors import EXIT_OK

EXAMPLES = """\
examples:
  mlrun check recipes/summary.toml
  mlrun check recipes/summary.toml model.name=mlp criterion.name=cross_entropy
  mlrun check recipes/summary.toml --explain     each key and the file, override or default it comes from
"""

SUMMARY = "validate a recipe and print it fully resolved; trains nothing"


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``check``."""
    parser = add_command(subparsers, parent, "check", summary=SUMMARY, description=SUMMARY, epilog=EXAMPLES)
    add_recipe_arguments(parser)
    parser.add_argument(
        "--explain", action="store_true",
        help="print each resolved key with the file (or override, or default) it comes from",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Load and validate the recipe, run the pre-flight, print the resolved TOML."""
    import tomli_w

    from mlrun.build import preflight
    from mlrun.recipe import load_recipe

    registry = load_registry(args)
    recipe = load_recipe(args.recipe, registry, args.overrides, extra_data=data_override(args))
    preflight(recipe)  # what a run would refuse before training: device, data path, output folder
    for warning in recipe.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.explain:
        print(f"# {recipe.path}: OK. Each resolved key and where it comes from:")
        print(explained(recipe.to_dict(), args), end="")
        return EXIT_OK
    sweep = checked_sweep(args, registry)
    print(f"# {recipe.path}: OK. Fully resolved recipe:")
    if sweep:
        print(sweep)
    print(tomli_w.dumps(recipe.to_dict()), end="")
    return EXIT_OK


def checked_sweep(args: argparse.Namespace, registry: Any) -> str | None:
    """A recipe's ``[sweep]`` section checked as ``mlrun sweep`` checks it (every value of its space); None without one."""
    from pathlib import Path

    from mlrun.recipe import SWEEP_SECTION
    from mlrun.recipe_extends import read_recipe

    data, _, _ = read_recipe(Path(args.recipe), [], data_override(args))
    if SWEEP_SECTION not in data:
        return None
    from mlrun.sweep.check import prepare

    prepared = prepare(args.recipe, args.overrides, registry, data_override(args))
    spec = prepared.spec
    return (
        f"# [sweep]: OK: {spec.trials} trials ({spec.sampler}), {prepared.direction} {prepared.objective}; "
        "every value of its space passes the recipe's validation"
    )


def explained(resolved: dict[str, Any], args: argparse.Namespace) -> str:
    """``key = value  # source`` lines, the sources aligned (see :func:`mlrun.recipe_extends.explain`)."""
    from pathlib import Path

    from mlrun.params import format_value
    from mlrun.recipe_extends import explain

    rows = [
        (f"{key} = {format_value(value)}", source)
        for key, value, source in explain(resolved, Path(args.recipe), args.overrides, data_override(args))
    ]
    width = min(max((len(text) for text, _ in rows), default=0), 60)
    return "".join(f"{text:<{width}}  # {source}\n" for text, source in rows)
