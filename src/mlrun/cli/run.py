"""``mlrun run RECIPE`` (or just ``mlrun RECIPE``): train a recipe."""

from __future__ import annotations

import argparse
from typing import Any

from mlrun.cli.common import add_command, add_recipe_arguments, data_override, load_registry
from mlrun.cli.launch import add_launch_options
from mlrun.cli.output import echo
from mlrun.errors import EXIT_OK

EXAMPLES = """\
examples:
  mlrun recipes/summary.toml
  mlrun recipes/summary.toml optimizer.lr=0.003 train.epochs=1
  mlrun recipes/summary.toml --data ~/datasets train.device=cpu
  mlrun recipes/summary.toml --nproc 2 train.epochs=1     data-parallel, 2 processes

overrides are key.path=value pairs; values are TOML (1, 0.5, true, [0.5], "text"),
and a bare word (cpu, mlp) is taken as a string. transforms are indexed: transforms.1.mean=[0.3]
"""

SUMMARY = "train a recipe (the default command)"


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``run``."""
    parser = add_command(subparsers, parent, "run", summary=SUMMARY, description=SUMMARY, epilog=EXAMPLES)
    add_recipe_arguments(parser)
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run folder (same recipe)")
    parser.add_argument("--force", action="store_true", help="with --resume: accept a changed recipe")
    add_launch_options(
        parser,
        nproc_help="train in N local processes (DistributedDataParallel via torch.distributed.run)",
        restarts_help="with --nproc: restart the workers up to R times after a failure, resuming "
        "from the latest checkpoint",
    )


def run(args: argparse.Namespace) -> int:
    """Train the recipe in this process (``--resume`` continues a run folder instead)."""
    from mlrun import engine
    from mlrun.recipe import load_recipe

    registry = load_registry(args)
    if args.resume:
        from mlrun.cli.resume import continue_run

        return continue_run(args, registry, args.resume, recipe_source=args.recipe)
    recipe = load_recipe(args.recipe, registry, args.overrides, extra_data=data_override(args))
    engine.run(recipe, echo=echo)
    return EXIT_OK
