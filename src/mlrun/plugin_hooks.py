"""Calling plugins' hooks, and the hook-level mistakes an author can make.

- :func:`call_hook`: one plugin's hook, contained; a failure names the plugin's own
  file and line (the innermost frame in its code, not in torch or mlrun).
- :func:`declare_kinds`: the kinds plugins add through ``register_kinds``.
- :func:`check_pending`: hooks that no spec declares (a misspelled ``register_model``).
- :func:`flag_unmarked_hooks`: a function named like a hook without ``@hookimpl``,
  which pluggy silently ignores.
"""

from __future__ import annotations

import os
import traceback
import types
from typing import TYPE_CHECKING, Any

import pluggy

from mlrun import hookspecs
from mlrun.components import Component, kind_problem
from mlrun.errors import did_you_mean
from mlrun.plugin_guard import PluginCodeFailed, code_roots, failure_site, plugin_code

if TYPE_CHECKING:
    from mlrun.plugins import PluginInfo, PluginSet

IMPL_MARKER = f"{hookspecs.PROJECT_NAME}_impl"
SPEC_MARKER = f"{hookspecs.PROJECT_NAME}_spec"


class HookFailed(Exception):
    """A plugin's hook raised, misbehaved or returned something that is not a list."""

    def __init__(self, reason: str, details: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.details = reason, details


def call_hook(impl: Any, info: PluginInfo, hook_name: str, limit: float) -> list[Any]:
    """Call one plugin's hook, contained; its list (empty for None), or :class:`HookFailed`."""
    try:
        with plugin_code(info, hook=hook_name, limit=limit):  # no exit, hang or stray stdout from a hook
            result = impl.function()
    except PluginCodeFailed as exc:
        raise HookFailed(exc.reason, exc.details) from None
    except Exception as exc:  # noqa: BLE001 - reported with the plugin's own file and line
        site = failure_site(exc, hook_roots(impl.function))
        at = f" at {site}" if site else ""
        raise HookFailed(f"{hook_name}() raised {type(exc).__name__}{at}: {exc}", traceback.format_exc()) from None
    if result is None:
        return []
    if not isinstance(result, (list, tuple)):
        raise HookFailed(f"{hook_name}() must return a list, got {type(result).__name__}")
    return list(result)


def hook_roots(function: Any) -> list[str]:
    """The plugin's own code: its package (or module), and the hook function's file."""
    roots = code_roots(getattr(function, "__module__", None) or "")
    code = getattr(function, "__code__", None)
    if code is not None:
        roots.append(os.path.realpath(code.co_filename))
    return roots


def declare_kinds(plugins: PluginSet) -> None:
    """Add the kinds plugins return from ``register_kinds``, each checked, with its hook spec.

    The hook spec is generated from the declaration (a hook taking nothing and returning
    a list of the kind's descriptors), so a plugin author writes no pluggy spec of their own.
    A plugin whose kinds cannot be declared fails whole: its components need them.
    """
    manager = plugins.manager
    for impl in reversed(manager.hook.register_kinds.get_hookimpls()):
        info = plugins.infos[impl.plugin_name]
        if not info.ok:
            continue
        try:
            declared = call_hook(impl, info, "register_kinds", plugins.timeout)
        except HookFailed as exc:
            info.fail(exc.reason, exc.details)
            continue
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


def known_hooks(manager: pluggy.PluginManager) -> list[str]:
    """Every hook that has a spec (built-in ones and those plugins declared), sorted."""
    return sorted(n for n in vars(manager.hook) if not n.startswith("_") and getattr(manager.hook, n).has_spec())


def check_pending(plugins: PluginSet) -> None:
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
            known = known_hooks(manager)
            hints = "".join(did_you_mean(u, known) for u in unknown)
            manager.unregister(exc.plugin)
            info = plugins.infos.get(name or "")
            if info is None:  # pragma: no cover - every plugin mlrun registers has an info
                raise
            info.hooks = []
            info.fail(f"unknown hook(s) {', '.join(unknown)}{hints}; the hooks are: {', '.join(known)}")


def flag_unmarked_hooks(plugins: PluginSet) -> None:
    """Record, for each third-party plugin, the functions named like a hook that lack ``@hookimpl``.

    pluggy registers only marked functions, so such a hook is silently never called and
    its components end in a bare "unknown model".
    """
    hooks = known_hooks(plugins.manager)
    for info in plugins.infos.values():
        plugin = plugins.manager.get_plugin(info.name)
        if info.builtin or plugin is None:
            continue
        for name in hooks:
            function = getattr(plugin, name, None)
            if callable(function) and not _marked(function):
                info.refuse(
                    f"{name}() has no @hookimpl, so mlrun never calls it: add @hookimpl above it "
                    "(from mlrun import hookimpl)",
                    hook=name,
                )


def _marked(function: Any) -> bool:
    return getattr(function, IMPL_MARKER, None) is not None or getattr(function, SPEC_MARKER, None) is not None
