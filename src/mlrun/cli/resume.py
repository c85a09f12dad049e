"""``mlrun resume RUN_DIR``: continue a run from its checkpoint, exactly where it stopped.

The resume policy (what may change, what is refused) lives in :mod:`mlrun.resume` and
the engine; this command only loads the recipe and hands over the folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrun.cli.common import add_command, add_data_option, data_override, load_registry
from mlrun.cli.launch import add_launch_options
from mlrun.cli.output import echo
from mlrun.errors import EXIT_OK

if TYPE_CHECKING:
    from mlrun.registry import Registry

EXAMPLES = """\
examples:
  mlrun resume runs/summary-20261130-131159
  mlrun resume runs/summary-20261130-131159 train.epochs=10 --force   train longer
  mlrun recipes/summary.toml --resume runs/summary-20261130-131159
"""


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``resume``."""
    parser = add_command(
        subparsers, parent, "resume", summary="continue an interrupted run from its last checkpoint",
        description="Continue a run from its checkpoint, exactly where it stopped.", epilog=EXAMPLES,
    )  # fmt: skip
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, e.g. runs/summary-20261130-131159")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="change the recipe (needs --force)")
    parser.add_argument("--force", action="store_true", help="accept a recipe that differs from the run's")
    add_data_option(parser)
    add_launch_options(
        parser,
        nproc_help="the run's process count (default: the same as it was trained with; another count is refused)",
        restarts_help="with several processes: restart the workers up to R times after a failure",
    )


def run(args: argparse.Namespace) -> int:
    """Continue RUN_DIR with the recipe saved in it (plus any overrides)."""
    return continue_run(args, load_registry(args), args.run_dir, recipe_source=None)


def continue_run(args: argparse.Namespace, registry: Registry, run_dir: str, *, recipe_source: str | None) -> int:
    """Continue a run folder; the engine refuses changes it cannot honour (see mlrun.resume).

    ``recipe_source`` is the recipe file given with ``run RECIPE --resume``; None means the
    run folder's own recipe.toml.
    """
    from mlrun import engine
    from mlrun.errors import UsageError
    from mlrun.recipe import load_recipe
    from mlrun.runs import RECIPE_FILE, RunFolder

    extra = data_override(args)
    folder = RunFolder(Path(run_dir))
    registry.remember_run(folder.path)  # an unknown component then names the plugins the run used
    saved_recipe = folder.path / RECIPE_FILE
    if not saved_recipe.is_file():
        raise UsageError(f"{folder.path} is not a run folder: {saved_recipe} is missing")
    source = saved_recipe if recipe_source is None else Path(recipe_source)
    recipe = load_recipe(source, registry, args.overrides, extra_data=extra)
    engine.run(recipe, echo=echo, resume=folder, force=args.force)
    return EXIT_OK
