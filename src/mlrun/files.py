"""File-system operations that never leave anything half-written.

Every file mlrun writes goes through :func:`atomic_write`; every folder it fills
from several files (unpacked data, a new plugin package) goes through
:func:`staged_folder`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from mlrun.errors import MlrunError


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file so that readers see the old content or the new, never a mix.

    The data goes to a temporary file in the same folder, is flushed and fsynced,
    then renamed over ``path``. Errors are raised with the path named; the previous
    file is left untouched.
    """
    try:
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise MlrunError(f"could not write {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(handle, 0o666 & ~current_umask())  # mkstemp makes 0600; results are for sharing
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
    except BaseException as exc:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        cause = os_error_in(exc)
        if cause is not None:
            raise MlrunError(f"could not write {path}: {cause.strerror or cause}") from exc
        raise
    _fsync_dir(path.parent)


def os_error_in(exc: BaseException) -> OSError | None:
    """The operating-system error behind ``exc``, if any.

    torch.save reports a full disk as ``RuntimeError: [enforce fail at
    inline_container.cc...] unexpected pos``, with the real ``OSError`` (ENOSPC) only in
    the exception's context: that is the one worth showing.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename already happened
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write(path, lambda out: out.write(text.encode("utf-8")))


def nearest_existing(path: Path) -> Path:
    """``path`` itself, or its closest ancestor that exists (where new folders would go)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


@contextlib.contextmanager
def staged_folder(final: Path, *, replace: bool) -> Iterator[Path]:
    """Yield a scratch folder that becomes ``final`` only if the block succeeds.

    With ``replace``, an existing ``final`` is swapped out; without it, an existing
    ``final`` makes the rename fail. Any folders created on the way are removed
    again on failure, so a failed attempt leaves the file system exactly as it was.
    """
    created: list[Path] = []
    parent = final.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; these folders are for sharing
    try:
        yield staging
        if replace and final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


class LockHeld(MlrunError):
    """Another process holds a lock that this one asked for without waiting."""


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the block.

    With ``wait``, block until the lock is free (first-time data unpacking: the second
    process waits, then finds the work done); without it, raise :class:`LockHeld`
    naming ``what`` (a run folder another process is writing). The kernel releases
    the lock when its holder dies, even by ``kill -9``: there is no stale lock to clean.
    """
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
    except OSError as exc:
        raise MlrunError(f"could not lock {what} ({path}: {exc.strerror or exc})") from exc
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise LockHeld(f"{what} is in use by another mlrun process") from exc
        yield
    finally:
        os.close(handle)  # closing releases the lock
