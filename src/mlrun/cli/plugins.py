"""``mlrun plugins``: every plugin, where it comes from, its hooks, what it gives, whether it loaded."""

from __future__ import annotations

import argparse
import json
import sys
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
    """Print every plugin, as a table or as JSON; warnings about the plugin settings go to stderr."""
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
                "status": info.status,
                "error": info.error,
                "problems": [p.text for p in info.problems],
            }
            for info in infos
        ]
        print(json.dumps(payload, indent=2))
    else:
        rows = [("NAME", "FROM", "HOOKS", "COMPONENTS", "STATUS")]
        for info in infos:
            components = ", ".join(f"{n} {k}" for k, n in counts.get(info.name, {}).items()) or "-"
            status = info.status if info.status == "ok" else f"{info.status} (see below)"
            rows.append((info.name, info.label, ", ".join(info.hooks) or "-", components, status))
        print(format_table(rows))
        for info in infos:
            if info.status != "ok":  # the reasons are too long for a table cell
                print(f"\n{info.name} ({info.label}) {info.status}:")
                print("\n".join(f"  {reason}" for reason in info.reasons))
    for line in settings_warnings(registry):
        print(line, file=sys.stderr)
    return EXIT_OK


def settings_warnings(registry: Registry) -> list[str]:
    """What the plugin settings leave out, one stderr line each: allow-list entries matching nothing
    (a warning), installed plugins not loaded (a note)."""
    from mlrun.lookup_notes import unmatched_allow_entries
    from mlrun.plugins import ALLOW_LIST_ENV, DISABLE_AUTOLOAD_ENV

    plugins = registry.plugins
    lines = [f"warning: {entry}" for entry in unmatched_allow_entries(plugins)]
    left_out = plugins.not_loaded() if not plugins.settings.autoload or plugins.settings.allow is not None else []
    if left_out:
        why = f"{ALLOW_LIST_ENV} leaves them out" if plugins.settings.autoload else f"{DISABLE_AUTOLOAD_ENV} is set"
        names = ", ".join(f"'{i.name}' ({i.label})" for i in left_out)
        lines.append(f"note: installed but not loaded ({why}): {names}")
    return lines


def _component_counts(registry: Registry) -> dict[str, dict[str, int]]:
    """Plugin name → kind → how many usable components it gives (clashing ones included)."""
    counts: dict[str, dict[str, int]] = {}
    for entry in registry.everything():
        per_kind = counts.setdefault(entry.plugin.name, {})
        per_kind[entry.component.kind] = per_kind.get(entry.component.kind, 0) + 1
    return counts
