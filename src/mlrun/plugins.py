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

A plugin's own code (its import, its register hooks) runs inside :func:`plugin_code`,
which keeps what it does from taking mlrun down: ``sys.exit()`` and ``KeyboardInterrupt``
raised by it, imports that hang, and output to stdout (which would corrupt ``--json``).
Not containable: ``os._exit()``, crashes in C code, and C loops that never return to Python.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from types import FrameType
from typing import Any

import pluggy

from mlrun import hookspecs
from mlrun.errors import PluginError, UsageError

ENTRY_POINT_GROUP = "mlrun"
DISABLE_AUTOLOAD_ENV = "MLRUN_DISABLE_PLUGIN_AUTOLOAD"
ALLOW_LIST_ENV = "MLRUN_PLUGINS"
STRICT_ENV = "MLRUN_STRICT_PLUGINS"
TIMEOUT_ENV = "MLRUN_PLUGIN_IMPORT_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
SLOW_NOTICE_S = 5.0  # when a plugin's code is reported as slow, before the limit stops it

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
        with plugin_code(info, limit=plugins.timeout):
            plugin = load()
    except PluginCodeFailed as exc:
        info.fail(exc.reason, exc.details)
        return
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


class PluginCodeFailed(Exception):
    """A plugin's code did something mlrun contains instead of obeying: exit, interrupt, hang."""

    def __init__(self, reason: str, details: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.details = reason, details


class _TimeLimit(BaseException):
    """Raised into a plugin's code by SIGALRM; a BaseException so ``except Exception`` misses it."""


def import_timeout() -> float:
    """The time limit for a plugin's code, from MLRUN_PLUGIN_IMPORT_TIMEOUT; 0 means none."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 1e6:  # also rejects nan and inf, which the timer cannot take
        raise UsageError(f"{TIMEOUT_ENV} must be a number of seconds (0: no limit), got '{text}'")
    return seconds


@contextlib.contextmanager
def plugin_code(
    info: PluginInfo, hook: str | None = None, *, limit: float = DEFAULT_TIMEOUT_S
) -> Iterator[None]:
    """Run a plugin's import (``hook=None``) or one of its hooks so that it cannot take mlrun down.

    Its stdout goes to stderr; after a few seconds it is reported as slow and after
    ``limit`` seconds (0: never) it is stopped; ``sys.exit()``, a ``KeyboardInterrupt``
    it raises itself and the time limit become :class:`PluginCodeFailed`. A real Ctrl-C
    still stops mlrun.
    Built-ins run as they are: they are mlrun's own code (a slow torch import is no hang).
    """
    if info.builtin:
        yield
        return
    during = "while being imported" if hook is None else f"in {hook}()"
    subject = "import" if hook is None else f"{hook}()"
    activity = f"{'loading' if hook is None else f'calling {hook}() of'} plugin '{info.name}' ({info.label})"
    with _stdout_to_stderr(), _ctrl_c_watch() as ctrl_c, _time_limit(activity, limit) as timer:
        try:
            yield
        except SystemExit as exc:
            code = "" if exc.code is None else repr(exc.code)
            raise PluginCodeFailed(f"called sys.exit({code}) {during}", traceback.format_exc()) from None
        except KeyboardInterrupt:
            # A real Ctrl-C and a KeyboardInterrupt raised by the plugin's code look the same,
            # except that only the former passes through the SIGINT handler: _ctrl_c_watch
            # notes it. A noted one stops mlrun (the user may be escaping a hanging import);
            # any other is the plugin's own doing and fails only that plugin.
            if ctrl_c.pressed:
                raise
            raise PluginCodeFailed(
                f"raised KeyboardInterrupt {during} (not a Ctrl-C: the plugin's own code raised it)",
                traceback.format_exc(),
            ) from None
        except _TimeLimit:
            raise PluginCodeFailed(
                f"{subject} did not finish in {limit:g} s (the limit is set by {TIMEOUT_ENV})",
                traceback.format_exc(),
            ) from None
        finally:
            timer.active = False  # first thing: a late alarm must not hit mlrun's own cleanup


@dataclass
class _CtrlC:
    pressed: bool = False


@contextlib.contextmanager
def _ctrl_c_watch() -> Iterator[_CtrlC]:
    """Wrap the SIGINT handler (main thread only) so that a real Ctrl-C can be told apart.

    Elsewhere a real Ctrl-C cannot raise KeyboardInterrupt: signals reach only the main
    thread, and without a Python handler there is no KeyboardInterrupt at all.
    """
    state = _CtrlC()
    previous = signal.getsignal(signal.SIGINT) if _in_main_thread() else None
    if not callable(previous):
        yield state
        return

    def noting(signum: int, frame: FrameType | None) -> Any:
        state.pressed = True
        return previous(signum, frame)

    signal.signal(signal.SIGINT, noting)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Timer:
    activity: str
    limit: float
    active: bool = True
    noticed: bool = False

    def on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if not self.active:
            return
        if not self.noticed:
            self.noticed = True
            limit = f" (stopped after {self.limit:g} s; {TIMEOUT_ENV} sets the limit)" if self.limit else ""
            try:
                print(f"{self.activity} is taking long…{limit}", file=sys.stderr, flush=True)
            except (OSError, RuntimeError, ValueError):
                pass  # stderr gone, or busy with the plugin's own output: the notice is optional
            if self.limit:
                signal.setitimer(signal.ITIMER_REAL, max(self.limit - _notice_after(self.limit), 0.001))
            return
        # Again soon, should the plugin's code swallow this one with a bare except.
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        raise _TimeLimit


def _notice_after(limit: float) -> float:
    return min(SLOW_NOTICE_S, limit / 2) if limit else SLOW_NOTICE_S


@contextlib.contextmanager
def _time_limit(activity: str, limit: float) -> Iterator[_Timer]:
    """Report slow code and stop it after ``limit`` seconds, via SIGALRM.

    Only possible in the main thread, and only where SIGALRM is not in use already
    (an armed timer, or a handler set from C): elsewhere the code runs without a limit.
    """
    timer = _Timer(activity, limit)
    usable = hasattr(signal, "setitimer") and _in_main_thread()
    previous = signal.getsignal(signal.SIGALRM) if usable else None
    if previous is None or signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0):
        yield timer
        return
    signal.signal(signal.SIGALRM, timer.on_alarm)
    signal.setitimer(signal.ITIMER_REAL, _notice_after(limit))
    try:
        yield timer
    finally:
        timer.active = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send a plugin's output to stderr, so it never mixes with mlrun's (machine-readable) stdout.

    Python-level prints through sys.stdout; output from C code (printf, os.write(1, ...))
    through file descriptor 1, which points at stderr meanwhile.
    """
    _flush(sys.stdout)
    saved = _redirect_fd(1, to=2)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _flush(sys.stderr)
        if saved is not None:
            _flush(sys.__stdout__)  # a plugin that wrote to sys.__stdout__ directly
            _flush_c_streams()  # printf's buffer would otherwise reach stdout at exit
            os.dup2(saved, 1)
            os.close(saved)


def _redirect_fd(fd: int, *, to: int) -> int | None:
    """Point ``fd`` at ``to``; returns a copy of the old ``fd`` to restore, or None if impossible."""
    try:
        saved = os.dup(fd)
    except OSError:
        return None
    try:
        os.dup2(to, fd)
    except OSError:
        os.close(saved)
        return None
    return saved


def _flush(stream: Any) -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream.flush()


def _flush_c_streams() -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(ImportError, OSError, AttributeError, TypeError):
        import ctypes

        ctypes.CDLL(None).fflush(None)


def _spec_names() -> set[str]:
    return {name for name in dir(hookspecs) if name.startswith("register_")}


def _unknown_hooks(plugin: Any) -> list[str]:
    """Names marked ``@hookimpl`` that match no hook spec (a misspelled hook never runs)."""
    marker = f"{hookspecs.PROJECT_NAME}_impl"
    names = [n for n in dir(plugin) if getattr(getattr(plugin, n, None), marker, None) is not None]
    return sorted(set(names) - _spec_names())
