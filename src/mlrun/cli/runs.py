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
"""


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``runs``."""
    parser = add_command(
        subparsers, parent, "runs", summary="list run folders with status and accuracy",
        description="List the runs under a folder: status, recipe, epochs, best and final accuracy.",
        epilog=EXAMPLES,
    )  # fmt: skip
    parser.add_argument("--dir", default="runs", metavar="DIR", help="the output folder (default: runs)")


def run(args: argparse.Namespace) -> int:
    """Print the table of runs; needs no plugins."""
    from mlrun.runlist import format_runs, list_runs

    print(format_runs(list_runs(Path(args.dir))))
    return EXIT_OK
