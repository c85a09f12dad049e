"""The plugin manager: built-in plugins and third-party ones from the ``mlrun`` entry-point group.

Built-in components live in ordinary plugin modules (``mlrun.builtins.*``) that use
only the public plugin API; they are registered exactly like third-party plugins.
A third-party plugin that fails to import or breaks the hook contract is recorded
as failed, with the reason, instead of taking mlrun down (unless strict mode is on).

Environment variables:

- ``MLRUN_DISABLE_PLUGIN_AUTOLOAD=1``: load no third-party plugins.
- ``MLRUN_PLUGINS=a,b``: load only the named third-party plugins (entry-point or distribution
  names, compared the way pip compares names: ``mlrun_lenet`` matches ``mlrun-lenet``).
- ``MLRUN_STRICT_PLUGINS=1``: a plugin that fails to load is an error.
- ``MLRUN_PLUGIN_IMPORT_TIMEOUT=60``: seconds a plugin's import (or one of its hooks) may take
  before it is abandoned and recorded as failed; ``0`` means no limit.

A plugin's own code (its import, its register hooks) runs inside
:func:`mlrun.plugin_guard.plugin_code`, which keeps it from taking mlrun down.
A plugin is ``ok``, ``partly loaded`` (some of its components or hooks were refused,
each with the reason; the rest work) or ``failed`` (nothing of it is usable).
"""

from __future__ import annotations

import importlib
import os
import re
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from mlrun import hookspecs
from mlrun.components import BUILTIN_KINDS, Component
from mlrun.errors import PluginError
from mlrun.plugin_guard import (
    DEFAULT_TIMEOUT_S,
    PluginCodeFailed,
    code_roots,
    failure_site,
    import_timeout,
    plugin_code,
)
from mlrun.plugin_hooks import check_pending, declare_kinds, flag_unmarked_hooks

ENTRY_POINT_GROUP = "mlrun"
DISABLE_AUTOLOAD_ENV = "MLRUN_DISABLE_PLUGIN_AUTOLOAD"
ALLOW_LIST_ENV = "MLRUN_PLUGINS"
STRICT_ENV = "MLRUN_STRICT_PLUGINS"

BUILTIN_PLUGINS: tuple[str, ...] = (
    "mlrun.builtins.datasets",
    "mlrun.builtins.image_folder",
    "mlrun.builtins.transforms",
    "mlrun.builtins.photo_transforms",
    "mlrun.builtins.models",
    "mlrun.builtins.vision_models",
    "mlrun.builtins.criteria",
    "mlrun.builtins.optimizers",
    "mlrun.builtins.schedulers",
    "mlrun.builtins.metrics",
    "mlrun.builtins.callbacks",
)


def normalize(name: str) -> str:
    """A distribution or plugin name as pip compares them: ``Mlrun_Lenet`` is ``mlrun-lenet``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class PluginProblem:
    """Something of a plugin that was refused while the rest of it loaded."""

    text: str
    #: The hook it concerns (a refused component's, a failing hook), if any.
    hook: str | None = None
    details: str | None = None  # the traceback, shown with --debug
    #: The refused component, as (kind, name); None for a problem with a whole hook.
    component: tuple[str, str] | None = None


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
    #: What was refused while the rest loaded: bad descriptors, a failing hook, a reserved name.
    problems: list[PluginProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True unless the plugin failed whole (its usable components count even when partly loaded)."""
        return self.error is None

    @property
    def status(self) -> str:
        """``ok``, ``partly loaded`` or ``failed``."""
        if self.error is not None:
            return "failed"
        return "partly loaded" if self.problems else "ok"

    @property
    def reasons(self) -> list[str]:
        """Why the plugin failed, or what of it was refused (empty when ok)."""
        return [self.error] if self.error is not None else [p.text for p in self.problems]

    def names(self) -> set[str]:
        """The names a user may call this plugin by (allow-list, qualified names), normalized."""
        return {normalize(n) for n in (self.name, self.distribution) if n}

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

    def refuse(
        self,
        text: str,
        *,
        hook: str | None = None,
        details: str | None = None,
        component: tuple[str, str] | None = None,
    ) -> None:
        """Record something of this plugin that is refused while the rest of it loads."""
        self.problems.append(PluginProblem(text, hook, details, component))


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

    def allows(self, *names: str | None) -> bool:
        """Whether the allow-list (MLRUN_PLUGINS) lets a plugin known by these names load."""
        if self.allow is None:
            return True
        return bool({normalize(n) for n in names if n} & {normalize(a) for a in self.allow})

    def unmatched(self, installed: Iterable[metadata.EntryPoint]) -> list[str]:
        """The allow-list entries that name no installed plugin (a typo there is silent otherwise)."""
        known = {normalize(n) for ep in installed for n in (ep.name, _dist_name(ep)) if n}
        return sorted(a for a in self.allow or () if normalize(a) not in known)


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
    settings: PluginSettings = field(default_factory=PluginSettings)
    #: MLRUN_PLUGINS entries that match no installed plugin.
    unmatched: list[str] = field(default_factory=list)

    def failed(self) -> list[PluginInfo]:
        """The plugins that failed, in load order."""
        return [info for info in self.infos.values() if not info.ok]

    def partly_loaded(self) -> list[PluginInfo]:
        """The plugins of which something was refused while the rest loaded, in load order."""
        return [info for info in self.infos.values() if info.status == "partly loaded"]

    def not_loaded(self) -> list[PluginInfo]:
        """Installed third-party plugins that were not loaded (autoload off, or not in MLRUN_PLUGINS)."""
        return [_info_for(ep) for ep in _entry_points() if ep.name not in self.infos]


def create_manager() -> pluggy.PluginManager:
    """A plugin manager that knows mlrun's hook specs and nothing else yet."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return manager


def load_plugins(settings: PluginSettings | None = None) -> PluginSet:
    """Register the built-in plugins, then the third-party ones the settings allow."""
    settings = settings or PluginSettings.from_env()
    manager = create_manager()
    plugins = PluginSet(manager, {}, strict=settings.strict, timeout=settings.timeout, settings=settings)
    for module_name in BUILTIN_PLUGINS:
        info = PluginInfo(name=module_name, builtin=True)
        _register(plugins, info, lambda m=module_name: importlib.import_module(m))
        if not info.ok:  # a broken built-in is a bug in mlrun itself: never hide it
            raise PluginError(f"built-in plugin {module_name} failed: {info.error}")

    if settings.autoload:
        installed = _entry_points()
        plugins.unmatched = settings.unmatched(installed)
        for entry_point in installed:
            if not settings.allows(entry_point.name, _dist_name(entry_point)):
                continue
            if entry_point.name in plugins.infos:
                continue  # the same distribution seen twice on sys.path
            info = _info_for(entry_point)
            _register(plugins, info, lambda ep=entry_point: load_entry_point(ep), roots=code_roots(entry_point.module))
    declare_kinds(plugins)
    check_pending(plugins)
    flag_unmarked_hooks(plugins)
    if plugins.strict:
        raise_if_failed(plugins)
    return plugins


def raise_if_failed(plugins: PluginSet) -> None:
    """In strict mode: every plugin failure and refusal is an error, reported together."""
    found = [f"plugin '{i.name}' ({i.label}) {i.status}: {r}" for i in plugins.infos.values() for r in i.reasons]
    if found:
        raise PluginError(found[0], problems=found[1:])


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _dist_name(entry_point: metadata.EntryPoint) -> str | None:
    dist = entry_point.dist
    return dist.metadata["Name"] if dist is not None else None


def _info_for(entry_point: metadata.EntryPoint) -> PluginInfo:
    dist = entry_point.dist
    return PluginInfo(
        name=entry_point.name, distribution=_dist_name(entry_point), version=dist.version if dist else None
    )


class StaleEntryPoint(Exception):
    """An entry point naming a module or object that is not there: the package changed since installed."""


def load_entry_point(entry_point: metadata.EntryPoint) -> Any:
    """``entry_point.load()``, telling a stale entry point from a plugin whose own import fails."""
    module_name, attrs = entry_point.module, entry_point.attr
    where = f"stale entry point '{entry_point.name} = {entry_point.value}'"
    try:
        target = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise StaleEntryPoint(f"{where} (there is no module '{module_name}')") from exc
        raise
    for attr in attrs.split(".") if attrs else []:
        if not hasattr(target, attr):
            raise StaleEntryPoint(f"{where} (module '{module_name}' has no '{attrs}')")
        target = getattr(target, attr)
    return target


def _register(plugins: PluginSet, info: PluginInfo, load: Any, roots: list[str] | None = None) -> None:
    plugins.infos[info.name] = info
    try:
        with plugin_code(info, limit=plugins.timeout):
            plugin = load()
    except PluginCodeFailed as exc:
        info.fail(exc.reason, exc.details)
        return
    except StaleEntryPoint as exc:
        again = f" or `pip install --force-reinstall {info.distribution}`" if info.distribution else ""
        info.fail(
            f"{exc}: re-install the package (`pip install -e .` in its source folder{again}); "
            "its entry points changed since it was installed",
            traceback.format_exc(),
        )
        return
    except Exception as exc:  # noqa: BLE001 - any import failure is reported, by name
        site = failure_site(exc, roots or [])
        at = f" at {site}" if site else ""
        info.fail(f"failed to import: {type(exc).__name__}{at}: {exc}", traceback.format_exc())
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
