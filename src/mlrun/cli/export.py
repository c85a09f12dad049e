"""``mlrun export RUN_DIR``: write a run's model as ONNX or TorchScript, with a sidecar JSON for deployment."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mlrun.cli.common import add_command, add_run_arguments, load_registry
from mlrun.cli.output import echo
from mlrun.errors import EXIT_OK

EXAMPLES = """\
examples:
  mlrun export runs/summary-20261130-131159
  mlrun export runs/summary-20261130-131159 --format torchscript --weights final
  mlrun export runs/summary-20261130-131159 --out deploy/fashion.onnx

The sidecar (e.g. export/model.onnx.json) gives the input shape and dtype, the
preprocessing (image mode and size, resize/crop, mean/std), the class names and how
to turn the output into probabilities. ONNX needs: pip install 'torch-mlrun[onnx]'
"""


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``export``."""
    parser = add_command(
        subparsers, parent, "export", summary="export a trained run's model as ONNX or TorchScript",
        description="Write a run's trained model as ONNX or TorchScript (dynamic batch dimension) with a "
        "sidecar JSON of what a deployment needs; the export is checked against the PyTorch model first.",
        epilog=EXAMPLES,
    )  # fmt: skip
    add_run_arguments(parser)
    parser.add_argument("--format", dest="fmt", choices=("onnx", "torchscript"), default="onnx", help="default: onnx")
    parser.add_argument(
        "--out", metavar="FILE",
        help="the model file (default RUN_DIR/export/model.onnx, or best.onnx, .torchscript.pt); the sidecar is FILE.json",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Export the model and write its sidecar."""
    from mlrun import export

    registry = load_registry(args, run_dir=args.run_dir)
    out = Path(args.out) if args.out else None
    export.export(Path(args.run_dir), fmt=args.fmt, weights=args.weights, out=out, registry=registry, echo=echo)
    return EXIT_OK
