"""Why a component name does not resolve: the notes under "unknown model 'lenet5'".

A bare "unknown" sends the user to read mlrun's source. Each note here names one
reason the component may be missing, and the fix: a refused descriptor, a plugin
left out by ``MLRUN_PLUGINS`` or by disabled autoload, an ``MLRUN_PLUGINS`` entry
matching nothing, a hook without ``@hookimpl``, a plugin the run folder recorded but
that is not installed now, and plugins that failed to load.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING

from mlrun.errors import did_you_mean
from mlrun.plugins import ALLOW_LIST_ENV, DISABLE_AUTOLOAD_ENV, PluginInfo, PluginSet
from mlrun.runs import recorded_plugins

if TYPE_CHECKING:
    from mlrun.registry import Entry, Registry

#: How many plugins a note lists, and how much of each reason.
NOTE_PLUGINS = 5
NOTE_REASON_CHARS = 160
NOTE_WIDTH = 110


def clash_message(kind: str, name: str, entries: Sequence[Entry]) -> str:
    """The plain name two third-party plugins give: ask which, with the qualified choices."""
    providers = " and ".join(sorted(f"'{e.plugin.name}' ({e.plugin.label})" for e in entries))
    choices = " or ".join(f'name = "{q}"' for q in sorted(e.qualified_name for e in entries))
    return f"{kind} '{name}' is provided by {len(entries)} plugins, {providers}: pick one with {choices}"


def unknown_message(registry: Registry, kind: str, name: str, *, plugin: str | None = None) -> str:
    """The message for a name that resolves to nothing: the closest names, then every likely reason."""
    known = registry.names(kind)
    if plugin is None:
        head = f"unknown {kind} '{name}'{did_you_mean(name, known)} (run `mlrun list {kind}` to see all {len(known)})"
    else:
        head = _unknown_qualified(registry, kind, plugin, name)
    notes = [
        *_refused(registry, kind, name),
        *_not_loaded(registry),
        *unmatched_allow_entries(registry.plugins),
        *_run_record(registry),
        *_partly_loaded(registry, kind),
        *_failed(registry.plugins.failed()),
    ]
    return head + "".join(f"\n    note: {note}" for note in notes)


def _note(head: str, *body: str) -> str:
    """A note's first line, then its body wrapped and indented under it: it must read well in a terminal."""
    lines = [wrapped for text in body for wrapped in textwrap.wrap(text, NOTE_WIDTH, break_on_hyphens=False)]
    return head + "".join(f"\n      {line}" for line in lines)


def _unknown_qualified(registry: Registry, kind: str, plugin: str, name: str) -> str:
    providers = sorted(e.qualified_name for e in registry.providers(kind, name))
    if not providers:
        known = registry.names(kind)
        return (
            f"unknown {kind} '{plugin}:{name}': no plugin gives a {kind} '{name}'{did_you_mean(name, known)} "
            f"(run `mlrun list {kind}` to see them all)"
        )
    plugins = sorted({q.split(":")[0] for q in providers if ":" in q})
    hint = did_you_mean(plugin, plugins)
    choices = " or ".join(f'"{q}"' for q in providers)
    return f"no loaded plugin called '{plugin}' gives {kind} '{name}'{hint}; it is available as {choices}"


def _refused(registry: Registry, kind: str, name: str) -> list[str]:
    return [
        _note(
            f"{kind} '{name}' of plugin '{r.plugin.name}' ({r.plugin.label}) was refused when it loaded:",
            r.reason,
            "(a mistake in the plugin, for its author to fix; details: `mlrun plugins`)",
        )
        for r in registry.refused.get((kind, name), [])
    ]


def _not_loaded(registry: Registry) -> list[str]:
    """Installed plugins left out by the settings: they may provide the name."""
    settings = registry.plugins.settings
    if settings.autoload and settings.allow is None:
        return []
    left_out = registry.plugins.not_loaded()
    if not left_out:
        return []
    listed = _plugin_list(left_out)
    if not settings.autoload:
        why = (
            f"{DISABLE_AUTOLOAD_ENV} is set"
            if os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip() not in ("", "0")
            else "autoload was turned off (default_registry(autoload=False))"
        )
        return [
            _note(
                f"third-party plugins are not loaded ({why}); these are installed and may provide it:",
                listed,
                f"to load them: unset {DISABLE_AUTOLOAD_ENV}",
            )
        ]
    allow = ",".join(sorted(settings.allow or ()))
    wanted = ",".join(filter(None, [allow, *(i.distribution or i.name for i in left_out[:NOTE_PLUGINS])]))
    return [
        _note(
            f"{ALLOW_LIST_ENV}={allow!r} leaves out installed plugins that may provide it:",
            listed,
            f"to load them: {ALLOW_LIST_ENV}={wanted} (or unset {ALLOW_LIST_ENV} to load every plugin)",
        )
    ]


def unmatched_allow_entries(plugins: PluginSet) -> list[str]:
    """One line per MLRUN_PLUGINS entry that names no installed plugin, with the closest name."""
    if not plugins.unmatched:
        return []
    third_party = [i for i in plugins.infos.values() if not i.builtin] + plugins.not_loaded()
    installed = sorted({n for i in third_party for n in (i.name, i.distribution) if n})
    return [
        _note(
            f"{ALLOW_LIST_ENV} names '{entry}', which matches no installed plugin{did_you_mean(entry, installed)}",
            f"(installed: {', '.join(installed) or 'none'})",
        )
        for entry in plugins.unmatched
    ]


def _run_record(registry: Registry) -> list[str]:
    """Plugins the run folder's run.json records that are not installed (in that version) now."""
    folder = registry.run_folder
    if folder is None:
        return []
    notes = []
    for dist, version in sorted(recorded_plugins(folder).items()):
        try:
            installed = metadata.version(dist)
        except metadata.PackageNotFoundError:
            notes.append(_note(f"the run {folder} was trained with {dist} {version}, which is not installed:",
                               f"pip install '{dist}=={version}'"))  # fmt: skip
            continue
        if installed != version:
            notes.append(_note(f"the run {folder} was trained with {dist} {version}, but {installed} is installed:",
                               f"pip install '{dist}=={version}' for the version it used"))  # fmt: skip
    return notes


def _partly_loaded(registry: Registry, kind: str) -> list[str]:
    """Whole-hook problems (a hook that raised, one without @hookimpl) of this kind's hook."""
    hook = registry.kinds[kind].hook if kind in registry.kinds else None
    return [
        _note(f"plugin '{info.name}' ({info.label}) is partly loaded and may provide it:", problem.text)
        for info in registry.plugins.partly_loaded()
        for problem in info.problems
        if problem.component is None and problem.hook in (None, hook)
    ]


def _failed(failed: list[PluginInfo]) -> list[str]:
    """One short, indented line per failed plugin: the message must read well in a terminal."""
    if not failed:
        return []
    count = f"{len(failed)} plugins" if len(failed) > 1 else "a plugin"
    lines = [f"{count} failed to load and may provide it (details: `mlrun plugins`):"]
    lines += [f"      '{info.name}' ({_short(info.error or '')})" for info in failed[:NOTE_PLUGINS]]
    if len(failed) > NOTE_PLUGINS:
        lines.append(f"      … and {len(failed) - NOTE_PLUGINS} more")
    return ["\n".join(lines)]


def _plugin_list(infos: list[PluginInfo]) -> str:
    listed = ", ".join(f"'{i.name}' ({i.label})" for i in infos[:NOTE_PLUGINS])
    return listed + (f" and {len(infos) - NOTE_PLUGINS} more" if len(infos) > NOTE_PLUGINS else "")


def _short(reason: str) -> str:
    reason = " ".join(reason.split())  # exception texts may span lines
    return reason if len(reason) <= NOTE_REASON_CHARS else reason[: NOTE_REASON_CHARS - 1].rstrip() + "…"
