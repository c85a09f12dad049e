"""The plugin manager: built-in plugins and third-party ones from the ``mlrun`` entry-point group.

Built-in components live in ordinary plugin modules (``mlrun.builtins.*``) that use
only the public plugin API; they are registered exactly like third-party plugins.
A third-party plugin that fails to import or breaks the hook contract is recorded
as failed, with the reason, instead of taking mlrun down (unless strict mode is on).

Environment variables:

- ``MLRUN_DISABLE_PLUGIN_AUTOLOAD=1``: load no third-party plugins.
- ``MLRUN_PLUGINS=a,b``: load only the named third-party plugins (entry-point or distribution names).
- ``MLRUN_STRICT_PLUGINS=1``: a plugin that fails to load is an error.
- ``MLRUN_PLUGIN_IMPORT_TIMEOUT=60``: seconds a plugin's import (or one of its hooks) may take
  before it is abandoned and recorded as failed; ``0`` means no limit.

A plugin's own code (its import, its register hooks) runs inside
:func:`mlrun.plugin_guard.plugin_code`, which keeps it from taking mlrun down.
"""

from __future__ import annotations

import importlib
import os
import traceback
import types
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from mlrun import hookspecs
from mlrun.components import BUILTIN_KINDS, Component, kind_problem
from mlrun.errors import PluginError, did_you_mean
from mlrun.params import SignatureError, parameters
from mlrun.plugin_guard import (
    DEFAULT_TIMEOUT_S,
    PluginCodeFailed,
    import_timeout,
    plugin_code,
)

ENTRY_POINT_GROUP = "mlrun"
DISABLE_AUTOLOAD_ENV = "MLRUN_DISABLE_PLUGIN_AUTOLOAD"
ALLOW_LIST_ENV = "MLRUN_PLUGINS"
STRICT_ENV = "MLRUN_STRICT_PLUGINS"

BUILTIN_PLUGINS: tuple[str, ...] = (
    "mlrun.builtins.datasets",
    "mlrun.builtins.transforms",
    "mlrun.builtins.models",
    "mlrun.builtins.criteria",
    "mlrun.builtins.optimizers",
    "mlrun.builtins.schedulers",
)


@dataclass
class PluginInfo:
    """One plugin as mlrun sees it: where it came from and whether it works."""

    name: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    error: str | None = None
    details: str | None = None  # the traceback, shown with --debug
    hooks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True unless the plugin failed to load or to register its components."""
        return self.error is None

    @property
    def label(self) -> str:
        """How ``mlrun list`` names the provider: ``built-in`` or ``dist==version``."""
        if self.builtin:
            return "built-in"
        if self.distribution:
            return f"{self.distribution}=={self.version}" if self.version else self.distribution
        return self.name

    def fail(self, reason: str, details: str | None = None) -> None:
        """Record the first reason this plugin is unusable."""
        if self.error is None:
            self.error, self.details = reason, details


@dataclass(frozen=True)
class PluginSettings:
    """Which plugins to load; read from the environment unless given."""

    autoload: bool = True
    allow: frozenset[str] | None = None
    strict: bool = False
    timeout: float = DEFAULT_TIMEOUT_S  # seconds a plugin's import or hook may take; 0: no limit

    @classmethod
    def from_env(cls, *, strict: bool = False) -> PluginSettings:
        """Settings from the MLRUN_*PLUGIN* environment variables (see the module docstring)."""
        allow_text = os.environ.get(ALLOW_LIST_ENV)
        allow = None
        if allow_text is not None:
            allow = frozenset(n.strip() for n in allow_text.split(",") if n.strip())
        return cls(
            autoload=not _truthy(os.environ.get(DISABLE_AUTOLOAD_ENV)),
            allow=allow,
            strict=strict or _truthy(os.environ.get(STRICT_ENV)),
            timeout=import_timeout(),
        )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class PluginSet:
    """The loaded plugin manager plus what is known about each plugin."""

    manager: pluggy.PluginManager
    infos: dict[str, PluginInfo]
    strict: bool = False
    timeout: float = DEFAULT_TIMEOUT_S
    #: Every component kind, built-in ones first, then those plugins declared.
    kinds: dict[str, type[Component]] = field(default_factory=lambda: {c.kind: c for c in BUILTIN_KINDS})
    #: The plugin that declared each kind that is not built in.
    kind_plugins: dict[str, PluginInfo] = field(default_factory=dict)

    def failed(self) -> list[PluginInfo]:
        """The plugins that failed, in load order."""
        return [info for info in self.infos.values() if not info.ok]


def create_manager() -> pluggy.PluginManager:
    """A plugin manager that knows mlrun's hook specs and nothing else yet."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return manager


def load_plugins(settings: PluginSettings | None = None) -> PluginSet:
    """Register the built-in plugins, then the third-party ones the settings allow."""
    settings = settings or PluginSettings.from_env()
    manager = create_manager()
    plugins = PluginSet(manager, {}, strict=settings.strict, timeout=settings.timeout)
    for module_name in BUILTIN_PLUGINS:
        info = PluginInfo(name=module_name, builtin=True)
        _register(plugins, info, lambda m=module_name: importlib.import_module(m))
        if not info.ok:  # a broken built-in is a bug in mlrun itself: never hide it
            raise PluginError(f"built-in plugin {module_name} failed: {info.error}")

    if settings.autoload:
        for entry_point in _entry_points():
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist is not None else None
            if settings.allow is not None and not ({entry_point.name, dist_name} & settings.allow):
                continue
            if entry_point.name in plugins.infos:
                continue  # the same distribution seen twice on sys.path
            info = PluginInfo(
                name=entry_point.name,
                distribution=dist_name,
                version=dist.version if dist is not None else None,
            )
            _register(plugins, info, entry_point.load)
    _declare_kinds(plugins)
    _check_pending(plugins)
    if plugins.strict:
        raise_if_failed(plugins)
    return plugins


def raise_if_failed(plugins: PluginSet) -> None:
    """In strict mode: turn the first recorded plugin failure into an error."""
    for info in plugins.failed():
        raise PluginError(f"plugin '{info.name}' ({info.label}) failed: {info.error}")


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _register(plugins: PluginSet, info: PluginInfo, load: Any) -> None:
    plugins.infos[info.name] = info
    try:
        with plugin_code(info, limit=plugins.timeout):
            plugin = load()
    except PluginCodeFailed as exc:
        info.fail(exc.reason, exc.details)
        return
    except Exception as exc:  # noqa: BLE001 - any import failure is reported, by name
        info.fail(f"failed to import: {type(exc).__name__}: {exc}", traceback.format_exc())
        return
    try:
        if _declares_hookspecs(plugin):  # the hook of a kind this plugin adds
            plugins.manager.add_hookspecs(plugin)
        plugins.manager.register(plugin, name=info.name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        info.fail(f"invalid hook implementation: {exc}", traceback.format_exc())
        return
    info.hooks = sorted(caller.name for caller in plugins.manager.get_hookcallers(plugin) or [])


def _declares_hookspecs(plugin: Any) -> bool:
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return any(getattr(getattr(plugin, n, None), marker, None) is not None for n in dir(plugin))


def _check_pending(plugins: PluginSet) -> None:
    """Fail each plugin implementing a hook that no spec declares (a misspelled hook never runs).

    pluggy's own ``check_pending()`` finds them once every plugin, and so every
    plugin-declared hook spec, is registered; it stops at the first, so it is asked
    again after each offending plugin is set aside.
    """
    manager = plugins.manager
    while True:
        try:
            manager.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = manager.get_name(exc.plugin)
            unknown = sorted(
                caller.name for caller in manager.get_hookcallers(exc.plugin) or [] if not caller.has_spec()
            )
            known = sorted(
                n for n in vars(manager.hook) if not n.startswith("_") and getattr(manager.hook, n).has_spec()
            )
            hints = "".join(did_you_mean(u, known) for u in unknown)
            manager.unregister(exc.plugin)
            info = plugins.infos.get(name or "")
            if info is None:  # pragma: no cover - every plugin mlrun registers has an info
                raise
            info.hooks = []
            info.fail(f"unknown hook(s) {', '.join(unknown)}{hints}; the hooks are: {', '.join(known)}")


def call_hook(impl: Any, info: PluginInfo, kind: type[Component] | None, limit: float) -> list[Any]:
    """Call one plugin's hook, contained; ``kind`` is what its list must hold (None: kind classes).

    A failure marks the plugin failed (with the reason) and gives an empty list.
    """
    hook_name = kind.hook if kind is not None else "register_kinds"
    expected = kind if kind is not None else type
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
        if kind is None:
            continue  # kind classes are checked by _declare_plugin_kinds
        if not isinstance(item, expected):
            info.fail(f"{hook_name}() must return {expected.__name__} descriptors, got {item!r:.80}")
            return []
        try:
            parameters(item)  # type: ignore[arg-type]  # a descriptor: checked just above
        except SignatureError as exc:
            info.fail(str(exc))
            return []
    return list(result)


def _declare_kinds(plugins: PluginSet) -> None:
    """Add the kinds plugins return from ``register_kinds``, each checked, with its hook spec.

    The hook spec is generated from the declaration (a hook taking nothing and returning
    a list of the kind's descriptors), so a plugin author writes no pluggy spec of their own.
    """
    manager = plugins.manager
    for impl in reversed(manager.hook.register_kinds.get_hookimpls()):
        info = plugins.infos[impl.plugin_name]
        if not info.ok:
            continue
        declared = call_hook(impl, info, None, plugins.timeout)
        known = dict(plugins.kinds)
        problems = []
        for cls in declared:
            problem = kind_problem(cls, known)
            if problem is None:
                known[cls.kind] = cls
            else:
                problems.append(problem)
        if problems:
            info.fail(f"register_kinds(): {problems[0]}")
            continue
        for cls in declared:
            plugins.kinds[cls.kind] = cls
            plugins.kind_plugins[cls.kind] = info
            if not getattr(manager.hook, cls.hook, None) or not getattr(manager.hook, cls.hook).has_spec():
                manager.add_hookspecs(_spec_for(cls))  # type: ignore[arg-type]  # pluggy reads any namespace


def _spec_for(kind: type[Component]) -> types.SimpleNamespace:
    """A namespace holding the generated hook spec of a plugin-declared kind."""

    def spec() -> list[Component]:
        return []

    spec.__name__ = spec.__qualname__ = kind.hook
    spec.__doc__ = f"Return the {kind.kind} components ({kind.__name__} descriptors) this plugin provides."
    return types.SimpleNamespace(**{kind.hook: hookspecs.hookspec(spec)})
