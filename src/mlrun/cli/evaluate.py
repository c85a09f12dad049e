"""``mlrun evaluate RUN_DIR``: test loss, accuracy, per-class accuracy and a confusion matrix."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mlrun.cli.common import add_command, add_run_arguments, load_registry
from mlrun.cli.output import echo
from mlrun.errors import EXIT_OK

EXAMPLES = """\
examples:
  mlrun evaluate runs/summary-20261130-131159
"""


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``evaluate``."""
    parser = add_command(
        subparsers, parent, "evaluate", summary="test loss, accuracy, per-class accuracy and a confusion matrix",
        description="Evaluate a run's trained model on the test split; writes confusion_matrix.png "
        "and evaluation.json into the run folder.", epilog=EXAMPLES,
    )  # fmt: skip
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Evaluate the run's model on the test split and report it."""
    from mlrun import evaluation

    registry = load_registry(args, run_dir=args.run_dir)
    evaluation.evaluate(Path(args.run_dir), registry=registry, echo=echo, weights=args.weights)
    return EXIT_OK
