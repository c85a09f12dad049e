"""``mlrun schema``: print the JSON Schema of recipes, for editors (Taplo, Even Better TOML)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mlrun.cli.common import add_command, load_registry
from mlrun.errors import EXIT_OK

EXAMPLES = """\
examples:
  mlrun schema                                  print it
  mlrun schema > .mlrun-recipe.schema.json      save it; then start a recipe with the line
                                                #:schema ./.mlrun-recipe.schema.json
"""

SUMMARY = "print the JSON Schema of recipes (every installed component), for editors"


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``schema``."""
    add_command(subparsers, parent, "schema", summary=SUMMARY, description=SUMMARY, epilog=EXAMPLES)


def run(args: argparse.Namespace) -> int:
    """Print the schema generated from the registry (built-ins and installed plugins)."""
    from mlrun.schema import recipe_schema

    print(json.dumps(recipe_schema(load_registry(args)), indent=2))
    return EXIT_OK
