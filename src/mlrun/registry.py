"""The registry: one namespace per component kind, filled from the plugins' hooks.

The kinds are data: the built-in descriptor classes (:data:`mlrun.components.BUILTIN_KINDS`)
plus those plugins declare through ``register_kinds``. Each kind names the hook that
fills its namespace.

Every descriptor is checked as it arrives (:mod:`mlrun.descriptor_checks`); a bad one
is refused alone, and its plugin shows as partly loaded. Names are contained:

- a built-in's name is reserved: a third-party component reusing it is refused;
- two third-party plugins giving the same name both stay usable under their
  qualified names (``mlrun-lenet:adamw``); the plain name then asks to choose.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlrun.components import Component
from mlrun.descriptor_checks import descriptor_problems
from mlrun.errors import PluginError
from mlrun.plugin_hooks import HookFailed, call_hook
from mlrun.plugins import PluginInfo, PluginSet, load_plugins, normalize, raise_if_failed

#: ``plugin:name``: a component chosen from one plugin (distribution or entry-point name).
QUALIFIED = re.compile(r"^(?P<plugin>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<name>[a-z][a-z0-9_]*)$")


@dataclass(frozen=True)
class Entry:
    """A registered component and the plugin that provided it."""

    component: Component
    plugin: PluginInfo

    @property
    def qualified_name(self) -> str:
        """``distribution:name`` for a third-party component (what a recipe writes to pick it); the name for a built-in."""
        if self.plugin.builtin:
            return self.component.name
        return f"{self.plugin.distribution or self.plugin.name}:{self.component.name}"


class LookupProblem(LookupError):
    """A name that does not resolve to exactly one component; the message is for users."""


@dataclass(frozen=True)
class Refusal:
    """A component a plugin returned that was refused, and why."""

    plugin: PluginInfo
    reason: str


@dataclass
class Registry:
    """Every registered component, by kind and name."""

    plugins: PluginSet
    #: Every kind, built-in ones first, by kind name: the descriptor class declaring it.
    kinds: dict[str, type[Component]] = field(default_factory=dict)
    #: Which plugin declared each kind that is not built in.
    kind_plugins: dict[str, PluginInfo] = field(default_factory=dict)
    #: The components usable by their plain name.
    entries: dict[str, dict[str, Entry]] = field(default_factory=dict)
    #: Names two or more third-party plugins give: usable by qualified name only.
    conflicts: dict[tuple[str, str], list[Entry]] = field(default_factory=dict)
    #: Components refused at load (bad descriptor, a built-in's name), by kind and name.
    refused: dict[tuple[str, str], list[Refusal]] = field(default_factory=dict)
    #: The run folder a recipe is being loaded from (evaluate, predict, resume), for its plugin record.
    run_folder: Path | None = None

    def get(self, kind: str, name: str) -> Entry:
        """The component ``name`` (or ``plugin:name``) of ``kind``; raises :class:`LookupProblem`."""
        from mlrun.lookup_notes import clash_message, unknown_message

        qualified = QUALIFIED.match(name)
        if qualified:
            return self._get_qualified(kind, qualified["plugin"], qualified["name"])
        if (kind, name) in self.conflicts:
            raise LookupProblem(clash_message(kind, name, self.conflicts[kind, name]))
        entry = self.entries.get(kind, {}).get(name)
        if entry is None:
            raise LookupProblem(unknown_message(self, kind, name))
        return entry

    def _get_qualified(self, kind: str, plugin: str, name: str) -> Entry:
        from mlrun.lookup_notes import unknown_message

        wanted = normalize(plugin)
        found = [e for e in self.providers(kind, name) if wanted in e.plugin.names()]
        if len(found) == 1:
            return found[0]
        raise LookupProblem(unknown_message(self, kind, name, plugin=plugin))

    def providers(self, kind: str, name: str) -> list[Entry]:
        """Every usable component of ``kind`` called ``name``, whatever plugin gave it."""
        if (kind, name) in self.conflicts:
            return list(self.conflicts[kind, name])
        entry = self.entries.get(kind, {}).get(name)
        return [entry] if entry is not None else []

    def names(self, kind: str) -> list[str]:
        """The names of one kind usable without a plugin prefix, sorted."""
        return sorted(self.entries.get(kind, {}))

    def remember_run(self, folder: Path) -> None:
        """Note the run folder a recipe comes from: an unknown name then checks its recorded plugins."""
        self.run_folder = Path(folder)

    def __iter__(self) -> Iterator[Entry]:
        """Every entry usable by its plain name, kind by kind in declaration order, names sorted."""
        for kind in self.kinds:
            for name in self.names(kind):
                yield self.entries[kind][name]

    def everything(self) -> Iterator[Entry]:
        """Every usable entry, clashing ones included, kind by kind, then by name and plugin."""
        for kind in self.kinds:
            names = set(self.entries.get(kind, {})) | {n for k, n in self.conflicts if k == kind}
            for name in sorted(names):
                yield from sorted(self.providers(kind, name), key=lambda e: e.qualified_name)


def build_registry(plugins: PluginSet | None = None) -> Registry:
    """Call every plugin's hooks and collect the components they return."""
    plugins = plugins or load_plugins()
    registry = Registry(plugins, dict(plugins.kinds), dict(plugins.kind_plugins))
    registry.entries = {kind: {} for kind in registry.kinds}
    _place(registry, _collect(registry))
    _settle(registry)
    if plugins.strict:
        raise_if_failed(plugins)
    return registry


def _collect(registry: Registry) -> list[Entry]:
    """Every sound descriptor of every plugin, in registration order (built-ins first)."""
    plugins = registry.plugins
    collected: list[Entry] = []
    for kind, cls in registry.kinds.items():
        hook = getattr(plugins.manager.hook, cls.hook)
        # Each implementation is called on its own so one broken plugin cannot hide the rest.
        for impl in reversed(hook.get_hookimpls()):  # registration order
            info = plugins.infos[impl.plugin_name]
            if not info.ok:
                continue
            try:
                returned = call_hook(impl, info, cls.hook, plugins.timeout)
            except HookFailed as exc:
                _refuse_or_raise(info, exc.reason, cls.hook, exc.details)
                continue
            for item in returned:
                if not isinstance(item, cls):
                    wrong = f"{cls.hook}() must return {cls.__name__} descriptors, got {item!r:.80}"
                    _refuse_or_raise(info, wrong, cls.hook)
                    continue
                problems = descriptor_problems(item)
                if problems:
                    key = (kind, str(item.name))
                    text = f"{cls.hook}(): {kind} '{item.name}' refused: {'; '.join(problems)}"
                    _refuse_or_raise(info, text, cls.hook, component=key)
                    registry.refused.setdefault(key, []).append(Refusal(info, "; ".join(problems)))
                    continue
                collected.append(Entry(item, info))
    return collected


def _refuse_or_raise(
    info: PluginInfo, reason: str, hook: str, details: str | None = None, component: tuple[str, str] | None = None
) -> None:
    if info.builtin:  # a broken built-in is a bug in mlrun itself: never hide it
        raise PluginError(f"built-in plugin {info.name}: {reason}")
    info.refuse(reason, hook=hook, details=details, component=component)


def _place(registry: Registry, collected: list[Entry]) -> None:
    """Put each entry under its name: built-in names reserved, third-party clashes kept apart."""
    builtin = {(e.component.kind, e.component.name) for e in collected if e.plugin.builtin}
    by_name: dict[tuple[str, str], list[Entry]] = {}
    for entry in collected:
        kind, name = key = entry.component.kind, entry.component.name
        hook = registry.kinds[kind].hook
        if not entry.plugin.builtin and key in builtin:
            reason = (
                f"'{name}' is the name of a built-in {kind}, and built-in names are reserved: "
                f"rename it (e.g. '{_prefix(entry.plugin)}_{name}')"
            )
            entry.plugin.refuse(f"{hook}(): {kind} '{name}' refused: {reason}", hook=hook, component=key)
            registry.refused.setdefault(key, []).append(Refusal(entry.plugin, reason))
            continue
        if any(other.plugin is entry.plugin for other in by_name.get(key, [])):
            text = f"{hook}() returns two {kind}s named '{name}'; the second is refused: rename it"
            entry.plugin.refuse(text, hook=hook, component=key)
            continue
        by_name.setdefault(key, []).append(entry)
    for (kind, name), found in by_name.items():
        if len(found) == 1:
            registry.entries[kind][name] = found[0]
        else:
            registry.conflicts[kind, name] = found


def _prefix(info: PluginInfo) -> str:
    """A name prefix for a plugin's components: ``mlrun-lenet`` gives ``lenet``."""
    base = normalize(info.distribution or info.name).removeprefix("mlrun-").replace("-", "_")
    return base if re.match(r"^[a-z][a-z0-9_]*$", base) else "my"


def _settle(registry: Registry) -> None:
    """A plugin with problems that gives nothing usable at all has failed, not partly loaded."""
    providing = {id(entry.plugin) for entry in registry.everything()}
    for info in registry.plugins.infos.values():
        if info.ok and info.problems and not info.builtin and id(info) not in providing:
            details = "\n".join(p.details for p in info.problems if p.details) or None
            info.fail("; ".join(p.text for p in info.problems), details)
