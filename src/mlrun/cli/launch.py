"""``--nproc``: start the workers of a data-parallel job (run and resume) under torch's elastic agent.

The launcher validates the recipe once, here, so that bad input fails before any
worker starts; each worker then runs the same command line minus the launch options.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_launch_options(parser: argparse.ArgumentParser, *, nproc_help: str, restarts_help: str) -> None:
    """``--nproc N`` and ``--max-restarts R``; their presence makes a command launchable."""
    parser.add_argument("--nproc", type=int, metavar="N", help=nproc_help)
    parser.add_argument("--max-restarts", type=int, default=0, metavar="R", help=restarts_help)


def resume_dir(args: argparse.Namespace) -> str | None:
    """The run folder to continue: ``resume RUN_DIR`` or ``run RECIPE --resume RUN_DIR``."""
    return args.run_dir if args.command == "resume" else args.resume


def launch_if_asked(args: argparse.Namespace, argv: list[str]) -> int | None:
    """Launch the workers when the options ask for several processes; the exit code, or None.

    None means: go on in this process (a single-process run, or already a worker).
    """
    from mlrun import distributed

    if "WORLD_SIZE" in os.environ:
        distributed.die_with_parent()  # at once: loading the data can take a while
        return None
    # Validated before anything runs; a resumed run keeps its own process count.
    nproc = distributed.processes_to_launch(args.nproc, args.max_restarts, resume_dir(args))
    return None if nproc is None else launch_distributed(args, argv, nproc)


def launch_distributed(args: argparse.Namespace, argv: list[str], nproc: int) -> int:
    """Check the recipe here, then start ``nproc`` workers under torch's elastic agent."""
    from pathlib import Path

    from mlrun import distributed
    from mlrun.build import preflight
    from mlrun.cli.common import data_override, load_registry
    from mlrun.errors import UsageError
    from mlrun.recipe import load_recipe
    from mlrun.runs import RECIPE_FILE

    registry = load_registry(args)
    extra = data_override(args)
    folder = resume_dir(args)
    source = args.recipe if args.command == "run" else Path(args.run_dir) / RECIPE_FILE
    if folder is not None and not (Path(folder) / RECIPE_FILE).is_file():
        raise UsageError(f"{folder} is not a run folder: {Path(folder) / RECIPE_FILE} is missing")
    # Bad input fails here, once, before any worker.
    recipe = load_recipe(source, registry, args.overrides, extra_data=extra)
    checked = preflight(recipe, new_run=folder is None)
    warning = distributed.check_process_count(nproc, uses_cuda=checked.device.type == "cuda")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return distributed.launch(
        without_launch_options(argv), nproc, args.max_restarts,
        output_dir=None if folder else recipe.train.output_dir, resume_dir=folder,
    )  # fmt: skip


def without_launch_options(argv: list[str]) -> list[str]:
    """The command line for each worker: the same, minus --nproc and --max-restarts."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--nproc", "--max-restarts"):
            skip = True
            continue
        if arg.startswith(("--nproc=", "--max-restarts=")):
            continue
        kept.append(arg)
    return kept
