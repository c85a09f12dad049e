"""The plugin manager: built-in plugins and third-party ones from the ``mlrun`` entry-point group.

Built-in components live in ordinary plugin modules (``mlrun.builtins.*``) that use
only the public plugin API; they are registered exactly like third-party plugins.
A third-party plugin that fails to import or breaks the hook contract is recorded
as failed, with the reason, instead of taking mlrun down (unless strict mode is on).

Environment variables:

- ``MLRUN_DISABLE_PLUGIN_AUTOLOAD=1``: load no third-party plugins.
- ``MLRUN_PLUGINS=a,b``: load only the named third-party plugins (entry-point or distribution names).
- ``MLRUN_STRICT_PLUGINS=1``: a plugin that fails to load is an error.
"""

from __future__ import annotations

import importlib
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from mlrun import hookspecs
from mlrun.errors import PluginError

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

    @classmethod
    def from_env(cls, *, strict: bool = False) -> PluginSettings:
        """Settings from MLRUN_DISABLE_PLUGIN_AUTOLOAD, MLRUN_PLUGINS and MLRUN_STRICT_PLUGINS."""
        allow_text = os.environ.get(ALLOW_LIST_ENV)
        allow = None
        if allow_text is not None:
            allow = frozenset(n.strip() for n in allow_text.split(",") if n.strip())
        return cls(
            autoload=not _truthy(os.environ.get(DISABLE_AUTOLOAD_ENV)),
            allow=allow,
            strict=strict or _truthy(os.environ.get(STRICT_ENV)),
        )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class PluginSet:
    """The loaded plugin manager plus what is known about each plugin."""

    manager: pluggy.PluginManager
    infos: dict[str, PluginInfo]
    strict: bool = False

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
    plugins = PluginSet(manager, {}, strict=settings.strict)
    for module_name in BUILTIN_PLUGINS:
        info = PluginInfo(name=module_name, builtin=True)
        _register(plugins, info, lambda m=module_name: importlib.import_module(m))
        if not info.ok:  # a broken built-in is a bug in mlrun itself: never hide it
            raise PluginError(f"built-in plugin {module_name} failed: {info.error}")

    if settings.autoload:
        for entry_point in _entry_points():
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist is not None else None
            if settings.allow is not None and not (
                {entry_point.name, dist_name} & settings.allow
            ):
                continue
            if entry_point.name in plugins.infos:
                continue  # the same distribution seen twice on sys.path
            info = PluginInfo(
                name=entry_point.name,
                distribution=dist_name,
                version=dist.version if dist is not None else None,
            )
            _register(plugins, info, entry_point.load)
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
        plugin = load()
    except Exception as exc:  # noqa: BLE001 - any import failure is reported, by name
        info.fail(f"failed to import: {type(exc).__name__}: {exc}", traceback.format_exc())
        return
    unknown = _unknown_hooks(plugin)
    if unknown:
        known = ", ".join(sorted(_spec_names()))
        info.fail(f"unknown hook(s) {', '.join(unknown)}; the hooks are: {known}")
        return
    try:
        plugins.manager.register(plugin, name=info.name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        info.fail(f"invalid hook implementation: {exc}", traceback.format_exc())
        return
    info.hooks = sorted(
        caller.name for caller in plugins.manager.get_hookcallers(plugin) or []
    )


def _spec_names() -> set[str]:
    return {name for name in dir(hookspecs) if name.startswith("register_")}


def _unknown_hooks(plugin: Any) -> list[str]:
    """Names marked ``@hookimpl`` that match no hook spec (a misspelled hook never runs)."""
    marker = f"{hookspecs.PROJECT_NAME}_impl"
    names = [n for n in dir(plugin) if getattr(getattr(plugin, n, None), marker, None) is not None]
    return sorted(set(names) - _spec_names())
