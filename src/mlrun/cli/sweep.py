"""``mlrun sweep RECIPE``: search recipe values with Optuna, one ordinary run per trial."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from mlrun.cli.common import add_command, add_data_option, data_override, load_registry
from mlrun.cli.output import echo
from mlrun.errors import UsageError

EXAMPLES = """\
examples:
  mlrun sweep recipes/mlp_sweep.toml                            the recipe's [sweep] section
  mlrun sweep recipes/mlp_sweep.toml --workers 2                two trials at a time
  mlrun sweep recipes/summary_val.toml optimizer.lr=0.1,0.01,0.001 train.batch_size=64,128
  mlrun sweep --resume sweeps/mlp_sweep-20261201-040000          continue a stopped sweep
  mlrun runs sweeps/mlp_sweep-20261201-040000                    its trials, best first
  mlrun sweep recipes/mlp_sweep.toml --storage postgresql://user:pw@db/optuna --study mlp

key=v1,v2,... sweeps a grid over the values; key=value without a comma sets the value for every trial.
See docs/sweeps.md.
"""

SUMMARY = "search recipe values with Optuna (grid, random, tpe), one run folder per trial"
BASE_FILE = "base.toml"


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``sweep``."""
    parser = add_command(subparsers, parent, "sweep", summary=SUMMARY, description=SUMMARY, epilog=EXAMPLES)
    parser.add_argument("recipe", nargs="?", help="a recipe, e.g. recipes/mlp_sweep.toml (not with --resume)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="key=v1,v2,...: a grid; key=value: a fixed value"
    )
    add_data_option(parser)
    parser.add_argument("--resume", metavar="SWEEP_DIR", help="continue a stopped sweep")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="trials run at once (default 1)")
    parser.add_argument(
        "--storage", metavar="URL", help="a shared database for the study (default: a file in the sweep folder)"
    )
    parser.add_argument("--study", metavar="NAME", help="the study's name (default: the sweep folder's name)")
    parser.add_argument("--dir", metavar="DIR", help="the sweep folder (default: sweeps/<recipe>-<time>)")
    parser.add_argument(
        "--allow-test-objective", action="store_true",
        help="accept a test-split objective (its figures become optimistic)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Check everything, then run the sweep (or continue one)."""
    from mlrun.sweep.check import check_workers, prepare
    from mlrun.sweep.runner import SweepRunner
    from mlrun.sweep.study import SweepConfig, import_optuna, open_storage

    import_optuna()
    if args.resume:
        if args.recipe or args.overrides:
            raise UsageError("--resume continues the sweep as it was: give only the sweep folder (and --workers)")
        folder = Path(args.resume)
        config = SweepConfig.read(folder)
        check_workers(args.workers, config.threads)
        open_storage(config.storage, folder)
        base = _read_base(folder)
        load_registry(args)
        code = SweepRunner(folder, config, base, args.workers, echo).run(create=False)
        return _report(folder, code)
    if not args.recipe:
        raise UsageError("give a recipe (mlrun sweep RECIPE key=v1,v2) or --resume SWEEP_DIR")
    registry = load_registry(args)
    prepared = prepare(
        args.recipe, args.overrides, registry, data_override(args), allow_test=args.allow_test_objective
    )  # fmt: skip
    check_workers(args.workers, prepared.threads)
    folder = Path(args.dir) if args.dir else Path("sweeps") / f"{prepared.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder}: already exists and is not empty; continue it with mlrun sweep --resume {folder}")
    if args.storage:
        open_storage(args.storage, folder)  # refused here, before anything is written
    config = SweepConfig(
        recipe=str(prepared.path), study=args.study or folder.name, storage=args.storage,
        objective=prepared.objective, direction=prepared.direction, threads=prepared.threads, spec=prepared.spec,
    )  # fmt: skip
    _write_folder(folder, config, prepared.base)
    echo(f"sweep {folder}: {config.spec.trials} trials ({config.spec.sampler}), {config.direction} {config.objective}")
    code = SweepRunner(folder, config, prepared.base, args.workers, echo).run(create=True)
    return _report(folder, code)


def _write_folder(folder: Path, config: Any, base: dict[str, Any]) -> None:
    import tomli_w

    from mlrun.files import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / BASE_FILE, tomli_w.dumps(base))
    config.write(folder)


def _read_base(folder: Path) -> dict[str, Any]:
    from mlrun.recipe_file import read_recipe_file

    return read_recipe_file(folder / BASE_FILE)


def _report(folder: Path, code: int) -> int:
    """Draw sweep.png and print the table of trials."""
    from mlrun.sweep.table import format_sweep, plot_sweep

    plotted = plot_sweep(folder)
    print(format_sweep(folder))
    if plotted:
        print(f"plot: {plotted}", file=sys.stderr if code else sys.stdout)
    return code
