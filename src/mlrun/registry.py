"""The registry: one namespace per component kind, filled from the plugins' hooks.

The kinds are data: the built-in descriptor classes (:data:`mlrun.components.BUILTIN_KINDS`)
plus those plugins declare through ``register_kinds``. Each kind names the hook that
fills its namespace.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from mlrun.components import Component
from mlrun.errors import PluginError, did_you_mean
from mlrun.plugins import PluginInfo, PluginSet, call_hook, load_plugins, raise_if_failed


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
    #: Every kind, built-in ones first, by kind name: the descriptor class declaring it.
    kinds: dict[str, type[Component]] = field(default_factory=dict)
    #: Which plugin declared each kind that is not built in.
    kind_plugins: dict[str, PluginInfo] = field(default_factory=dict)
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
        """Every entry, kind by kind in declaration order (the classic recipe's first), names sorted."""
        for kind in self.kinds:
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
    registry = Registry(plugins, dict(plugins.kinds), dict(plugins.kind_plugins))
    registry.entries = {kind: {} for kind in registry.kinds}
    by_name: dict[tuple[str, str], list[Entry]] = {}
    for kind, cls in registry.kinds.items():
        hook = getattr(plugins.manager.hook, cls.hook)
        # Each implementation is called on its own so one broken plugin cannot hide the rest.
        for impl in reversed(hook.get_hookimpls()):  # registration order
            info = plugins.infos[impl.plugin_name]
            if not info.ok:
                continue
            components = call_hook(impl, info, cls, plugins.timeout)
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
