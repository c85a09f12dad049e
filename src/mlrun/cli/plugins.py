"""``mlrun plugins``: every plugin, where it comes from, its hooks, what it gives, whether it loaded."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from mlrun.cli.common import add_command, load_registry
from mlrun.cli.output import format_table
from mlrun.errors import EXIT_OK

if TYPE_CHECKING:
    from mlrun.registry import Registry

EXAMPLES = """\
examples:
  mlrun plugins
  mlrun plugins --json
  MLRUN_PLUGINS=convnet mlrun plugins        load only the named third-party plugin
  MLRUN_DISABLE_PLUGIN_AUTOLOAD=1 mlrun list built-in components only
"""


def add_parser(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``plugins``."""
    parser = add_command(
        subparsers, parent, "plugins", summary="list loaded plugins",
        description="List every plugin: where it comes from, the hooks it implements, what it "
        "contributes, and whether it loaded.", epilog=EXAMPLES,
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="machine-readable")


def run(args: argparse.Namespace) -> int:
    """Print every plugin, as a table or as JSON."""
    registry = load_registry(args)
    counts = _component_counts(registry)
    infos = list(registry.plugins.infos.values())
    if args.json:
        payload = [
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "builtin": info.builtin,
                "hooks": info.hooks,
                "components": counts.get(info.name, {}),
                "status": "ok" if info.ok else "failed",
                "error": info.error,
            }
            for info in infos
        ]
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    rows = [("NAME", "FROM", "HOOKS", "COMPONENTS", "STATUS")]
    for info in infos:
        components = ", ".join(f"{n} {k}" for k, n in counts.get(info.name, {}).items()) or "-"
        status = "ok" if info.ok else f"failed: {info.error}"
        rows.append((info.name, info.label, ", ".join(info.hooks) or "-", components, status))
    print(format_table(rows))
    return EXIT_OK


def _component_counts(registry: Registry) -> dict[str, dict[str, int]]:
    """Plugin name → kind → how many usable components it gives."""
    counts: dict[str, dict[str, int]] = {}
    for entry in registry:
        per_kind = counts.setdefault(entry.plugin.name, {})
        per_kind[entry.component.kind] = per_kind.get(entry.component.kind, 0) + 1
    return counts
