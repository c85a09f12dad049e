"""Running a plugin's own code so that it cannot take mlrun down.

A plugin's import and its hooks run inside :func:`plugin_code`, which contains what
they may do instead of obeying: ``sys.exit()`` and ``KeyboardInterrupt`` raised by
the plugin, imports that hang (a time limit from ``MLRUN_PLUGIN_IMPORT_TIMEOUT``), and
output to stdout, which would corrupt ``--json``. Not containable: ``os._exit()``,
crashes in C code, and C loops that never return to Python.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from mlrun.errors import UsageError

if TYPE_CHECKING:
    from mlrun.plugins import PluginInfo

TIMEOUT_ENV = "MLRUN_PLUGIN_IMPORT_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
SLOW_NOTICE_S = 5.0  # when a plugin's code is reported as slow, before the limit stops it


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
def plugin_code(info: PluginInfo, hook: str | None = None, *, limit: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
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


def code_roots(module_name: str) -> list[str]:
    """Where a plugin's own code lives: its top-level package's folders, or its module file.

    Found without importing anything, so it also works for a plugin whose import failed.
    """
    top = module_name.split(".")[0]
    module = sys.modules.get(top)
    locations: list[str] = []
    if module is not None:
        locations = list(getattr(module, "__path__", None) or []) or [getattr(module, "__file__", None) or ""]
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            locations = list(spec.submodule_search_locations or []) or [spec.origin or ""]
    return [os.path.realpath(loc) for loc in locations if loc]


def failure_site(exc: BaseException, roots: list[str]) -> str | None:
    """``path:line`` of the innermost traceback frame inside the plugin's own code (``roots``).

    The innermost frame overall is often in torch or in mlrun; the author needs the line
    of their own code that led there. A SyntaxError's site is the line it points at.
    """
    if isinstance(exc, SyntaxError) and exc.filename and _inside(exc.filename, roots):
        return f"{exc.filename}:{exc.lineno}"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if _inside(frame.filename, roots):
            return f"{frame.filename}:{frame.lineno}"
    return None


def _inside(filename: str, roots: list[str]) -> bool:
    path = os.path.realpath(filename)
    return any(path == root or path.startswith(root + os.sep) for root in roots)


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
