"""The registry: one namespace per component kind, filled from the plugins' hooks."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

from mlrun.components import KINDS, Component
from mlrun.errors import PluginError, did_you_mean
from mlrun.params import SignatureError, parameters
from mlrun.plugins import (
    PluginCodeFailed,
    PluginInfo,
    PluginSet,
    load_plugins,
    plugin_code,
    raise_if_failed,
)

#: The hook that fills each kind's namespace.
HOOKS: dict[str, str] = {
    "dataset": "register_datasets",
    "transform": "register_transforms",
    "model": "register_models",
    "criterion": "register_criteria",
    "optimizer": "register_optimizers",
}


@dataclass(frozen=True)
class Entry:
    """A registered component and the plugin that provided it."""

    component: Component
    plugin: PluginInfo


class LookupProblem(LookupError):
    """A name that does not resolve to exactly one component; the message is for users."""


@dataclass
class Registry:
    """Every registered component, by kind and name."""

    plugins: PluginSet
    entries: dict[str, dict[str, Entry]] = field(default_factory=dict)
    conflicts: dict[tuple[str, str], list[Entry]] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> Entry:
        """The component registered as ``name`` in ``kind``; raises :class:`LookupProblem`."""
        if (kind, name) in self.conflicts:
            providers = " and ".join(
                sorted(f"'{e.plugin.name}' ({e.plugin.label})" for e in self.conflicts[kind, name])
            )
            raise LookupProblem(
                f"{kind} '{name}' is provided by two plugins, {providers}; "
                "uninstall or disable one of them (MLRUN_PLUGINS lists the plugins to load)"
            )
        try:
            return self.entries[kind][name]
        except KeyError:
            pass
        known = sorted(self.entries.get(kind, {}))
        message = f"unknown {kind} '{name}'{did_you_mean(name, known)}"
        message += f" (run `mlrun list {kind}` to see all {len(known)})"
        failed = self.plugins.failed()
        if failed:
            message += _failed_note(failed)
        raise LookupProblem(message)

    def names(self, kind: str) -> list[str]:
        """The usable names of one kind, sorted."""
        return sorted(self.entries.get(kind, {}))

    def __iter__(self) -> Iterator[Entry]:
        """Every entry, kind by kind in the classic recipe's order, names sorted."""
        for kind in KINDS:
            for name in self.names(kind):
                yield self.entries[kind][name]


#: How many failed plugins an unknown-name message lists, and how much of each reason.
NOTE_PLUGINS = 5
NOTE_REASON_CHARS = 140


def _failed_note(failed: list[PluginInfo]) -> str:
    """One short, indented line per failed plugin: the message must read well in a terminal."""
    count = f"{len(failed)} plugins" if len(failed) > 1 else "a plugin"
    lines = ["", f"    note: {count} failed to load and may provide it (details: `mlrun plugins`):"]
    for info in failed[:NOTE_PLUGINS]:
        reason = " ".join((info.error or "").split())  # exception texts may span lines
        if len(reason) > NOTE_REASON_CHARS:
            reason = reason[: NOTE_REASON_CHARS - 1].rstrip() + "…"
        lines.append(f"      '{info.name}' ({reason})")
    if len(failed) > NOTE_PLUGINS:
        lines.append(f"      … and {len(failed) - NOTE_PLUGINS} more")
    return "\n".join(lines)


def build_registry(plugins: PluginSet | None = None) -> Registry:
    """Call every plugin's hooks and collect the components they return."""
    plugins = plugins or load_plugins()
    registry = Registry(plugins, {kind: {} for kind in KINDS})
    by_name: dict[tuple[str, str], list[Entry]] = {}
    for kind, hook_name in HOOKS.items():
        hook = getattr(plugins.manager.hook, hook_name)
        # Each implementation is called on its own so one broken plugin cannot hide the rest.
        for impl in reversed(hook.get_hookimpls()):  # registration order
            info = plugins.infos[impl.plugin_name]
            if not info.ok:
                continue
            components = _call(impl, info, kind, hook_name, plugins.timeout)
            for component in components:
                by_name.setdefault((kind, component.name), []).append(Entry(component, info))
    for (kind, name), found in by_name.items():
        usable = [e for e in found if e.plugin.ok]
        if len(usable) == 1:
            registry.entries[kind][name] = usable[0]
        elif len(usable) > 1:
            registry.conflicts[kind, name] = usable
    if plugins.strict:
        raise_if_failed(plugins)
        for key in registry.conflicts:
            try:
                registry.get(*key)
            except LookupProblem as exc:
                raise PluginError(str(exc)) from exc
    return registry


def _call(impl: object, info: PluginInfo, kind: str, hook_name: str, limit: float) -> list[Component]:
    expected = KINDS[kind]
    try:
        with plugin_code(info, hook=hook_name, limit=limit):  # no exit, hang or stray stdout from a hook
            result = impl.function()  # type: ignore[attr-defined]
    except PluginCodeFailed as exc:
        info.fail(exc.reason, exc.details)
        return []
    except Exception as exc:  # noqa: BLE001 - reported as a failed plugin
        info.fail(f"{hook_name}() raised {type(exc).__name__}: {exc}", traceback.format_exc())
        return []
    if result is None:
        return []
    if not isinstance(result, (list, tuple)):
        info.fail(f"{hook_name}() must return a list of {expected.__name__}, got {type(result).__name__}")
        return []
    for item in result:
        if not isinstance(item, expected):
            info.fail(
                f"{hook_name}() must return {expected.__name__} descriptors, got {item!r:.80}"
            )
            return []
        try:
            parameters(item)
        except SignatureError as exc:
            info.fail(str(exc))
            return []
    return list(result)
