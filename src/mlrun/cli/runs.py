"""``mlrun runs``: list run folders with status and accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mlrun.cli.common import add_command
from mlrun.errors import EXIT_OK

EXAMPLES = """\
examples:
  mlrun runs
  mlrun runs --dir experiments
  mlrun runs sweeps/mlp_sweep-20261201-040000     a sweep's trials, best first
"""


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``runs``."""
    parser = add_command(
        subparsers, parent, "runs", summary="list run folders with status and accuracy",
        description="List the runs under a folder: status, recipe, epochs, best and final accuracy.",
        epilog=EXAMPLES,
    )  # fmt: skip
    parser.add_argument("--dir", default="runs", metavar="DIR", help="the output folder (default: runs)")
    parser.add_argument("folder", nargs="?", metavar="DIR", help="the output folder or a sweep folder (same as --dir)")


def run(args: argparse.Namespace) -> int:
    """Print the table of runs (a sweep folder: its trials, by objective); needs no plugins."""
    from mlrun.runlist import format_runs, list_runs

    folder = Path(args.folder or args.dir)
    if (folder / "sweep.json").is_file():
        from mlrun.sweep.table import format_sweep

        print(format_sweep(folder))
        return EXIT_OK
    print(format_runs(list_runs(folder)))
    return EXIT_OK
