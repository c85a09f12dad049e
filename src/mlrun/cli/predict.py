"""``mlrun predict RUN_DIR``: classify images or test-set samples with a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mlrun.cli.common import add_command, add_run_arguments, load_registry
from mlrun.cli.output import echo
from mlrun.errors import EXIT_OK

EXAMPLES = """\
examples:
  mlrun predict runs/summary-20261130-131159 --index 0 --index 1
  mlrun predict runs/summary-20261130-131159 shirt.png boot.jpg --top-k 5
"""


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``predict``."""
    parser = add_command(
        subparsers, parent, "predict", summary="classify images or test-set samples with a trained run",
        description="Classify image files (PNG/JPEG, converted like the training data) or test-set "
        "samples with a run's trained model; print the top classes and save one picture per sample.",
        epilog=EXAMPLES,
    )  # fmt: skip
    add_run_arguments(parser)
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files to classify")
    parser.add_argument(
        "--index", type=int, action="append", default=[], metavar="N", help="a test-set sample (repeatable)"
    )
    parser.add_argument("--top-k", type=int, default=3, metavar="K", help="classes to print per sample (default 3)")
    parser.add_argument("--out", metavar="DIR", help="where the pictures go (default RUN_DIR/predictions)")


def run(args: argparse.Namespace) -> int:
    """Print the top classes of each image and test-set sample; save one picture each."""
    from mlrun import predict

    registry = load_registry(args, run_dir=args.run_dir)
    out = Path(args.out) if args.out else None
    predict.predict(Path(args.run_dir), [Path(i) for i in args.images], args.index,
                    top_k=args.top_k, out_dir=out, registry=registry, echo=echo, weights=args.weights)  # fmt: skip
    return EXIT_OK
