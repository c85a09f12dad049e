"""``mlrun new plugin NAME``: scaffold a ready-to-install plugin package."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mlrun.cli.common import add_command
from mlrun.errors import EXIT_OK

EXAMPLES = """\
examples:
  mlrun new plugin mlrun-acme
  cd mlrun-acme && pip install -e . && mlrun list model
"""


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``new``."""
    parser = add_command(
        subparsers, parent, "new", summary="scaffold a new plugin package",
        description="Create a ready-to-install plugin package.", epilog=EXAMPLES,
    )  # fmt: skip
    parser.add_argument("what", choices=["plugin"], help="what to create")
    parser.add_argument("name", help="package name, e.g. mlrun-acme")
    parser.add_argument("--dir", default=".", metavar="DIR", help="parent folder (default: here)")


def run(args: argparse.Namespace) -> int:
    """Write the package and say how to install it; needs no plugins."""
    from mlrun.scaffold import create_plugin

    target = create_plugin(args.name, Path(args.dir))
    print(f"created {target}\nnext: cd {target} && pip install -e . && mlrun list model")
    return EXIT_OK
