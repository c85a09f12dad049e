"""Finding dataset files offline first: an explicit root, the user data dir, a system copy, a download.

torchvision's MNIST-family datasets read uncompressed IDX files from
``ROOT/<Folder>/raw/`` and skip their download when the files are there. This
module makes sure they are there, from the cheapest source that has them, and
never leaves a half-filled folder behind when every source fails.

The rules that keep user data safe:

- The root is ``--data DIR`` / ``dataset.root`` when given, else the user data
  dir. An explicit root is honoured: mlrun never silently reads another one.
- mlrun never deletes or replaces a file or folder. It fills ``raw/`` only when it
  is new or empty (nothing but hidden entries), from the system copy (its MD5s
  checked) or torchvision's download; a ``raw/`` that holds ``NAME.gz`` for each
  missing ``NAME`` is completed in place, adding the uncompressed files next to
  the ``.gz`` ones. Any other incomplete ``raw/`` is an error naming the missing
  files: it may be the user's own data, so it is left exactly as it is.
- First-time filling holds a lock (``ROOT/.<Folder>.lock``), so runs and DDP ranks
  starting together wait for one another and then find the files there.
- IDX files are read by :mod:`mlrun.idx`, which checks them against their size first.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlrun.errors import MlrunError, UsageError
from mlrun.files import file_lock, nearest_existing, staged_folder

DATA_DIR_ENV = "MLRUN_DATA_DIR"
OFFLINE_ENV = "MLRUN_OFFLINE"


@dataclass(frozen=True)
class IdxDataset:
    """Where an MNIST-style dataset lives: torchvision's folder name, its files, system copies.

    ``md5`` pairs file names with the MD5 of the uncompressed official file; a system
    copy is checked against them when it is unpacked.
    """

    title: str
    folder: str
    files: tuple[str, ...] = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    system_dirs: tuple[str, ...] = ()
    install_hint: str = ""
    extra_fixes: tuple[str, ...] = field(default=())
    md5: tuple[tuple[str, str], ...] = ()


def user_data_dir() -> Path:
    """The per-user data folder: ``$MLRUN_DATA_DIR``, else ``$XDG_CACHE_HOME/mlrun/data``."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mlrun" / "data"


def has_files(root: Path, spec: IdxDataset) -> bool:
    """True when ``root`` holds every raw IDX file of the dataset, uncompressed."""
    raw = root / spec.folder / "raw"
    return all((raw / name).is_file() for name in spec.files)


def find_system_copy(spec: IdxDataset) -> Path | None:
    """The first system folder holding every file of the dataset (gzipped or not)."""
    for folder in map(Path, spec.system_dirs):
        if all(_source_file(folder, name) for name in spec.files):
            return folder
    return None


def _source_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class _RawState:
    """What a ``raw/`` folder holds of the dataset's files."""

    gzipped: tuple[str, ...]  # missing uncompressed, but NAME.gz is there to unpack in place
    missing: tuple[str, ...]  # neither NAME nor NAME.gz
    empty: bool  # no raw/ folder, or nothing visible in it: mlrun may fill it

    @property
    def complete(self) -> bool:
        return not self.gzipped and not self.missing


def _inspect(raw: Path, spec: IdxDataset) -> _RawState:
    if not raw.is_dir():
        return _RawState(gzipped=(), missing=spec.files, empty=True)
    gzipped = tuple(n for n in spec.files if not (raw / n).is_file() and (raw / f"{n}.gz").is_file())
    missing = tuple(n for n in spec.files if not (raw / n).is_file() and n not in gzipped)
    # Hidden entries (an interrupted unpack's scratch folder, .DS_Store) do not make it the user's.
    empty = not any(not entry.name.startswith(".") for entry in raw.iterdir())
    return _RawState(gzipped=gzipped, missing=missing, empty=empty)


def resolve_root(
    spec: IdxDataset,
    root: str | None,
    *,
    download: bool,
    downloader: Callable[[Path], None] | None = None,
) -> Path:
    """Return a root folder that holds the dataset in torchvision's raw layout.

    The root is ``root`` when given (never another one), else the user data dir. A
    new or empty ``raw/`` is filled from a system copy, else ``downloader``
    (torchvision's download); see the module docstring for what is never touched.
    Raises a :class:`UsageError` naming what was tried, or what is missing, and the fix.
    """
    target = Path(root).expanduser() if root else user_data_dir()
    look = _Lookup(spec, root, target, download, downloader)
    existing = nearest_existing(look.raw)
    if not existing.is_dir():
        raise UsageError(
            f"cannot store {spec.title} under {target}: {existing} is a file, not a folder",
            problems=[f"point `--data DIR` (or dataset.root) at a folder; the IDX files go in DIR/{spec.folder}/raw/"],
        )
    state = _inspect(look.raw, spec)
    if state.complete:
        return target
    system = find_system_copy(spec)
    if state.empty and system is None and not look.can_download:
        raise _not_found(look)
    if not os.access(existing, os.W_OK | os.X_OK):
        if state.missing and not state.empty:
            raise _incomplete(spec, root, look.raw, state)
        raise UsageError(
            f"cannot store {spec.title} under {target}: {existing} is not writable",
            problems=["choose a writable data folder with `--data DIR` or $" + DATA_DIR_ENV],
        )
    try:
        with _filling(target, spec):
            _fill(look, system)
    except OSError as exc:  # a full disk, a folder made read-only meanwhile: not a traceback
        raise MlrunError(f"could not store {spec.title} in {look.raw}: {exc.strerror or exc}") from exc
    return target


@dataclass(frozen=True)
class _Lookup:
    """One search for a dataset: what was asked, and where its files go."""

    spec: IdxDataset
    root: str | None
    target: Path
    download: bool
    downloader: Callable[[Path], None] | None
    offline: bool = field(default_factory=lambda: os.environ.get(OFFLINE_ENV, "") not in ("", "0"))

    @property
    def raw(self) -> Path:
        return self.target / self.spec.folder / "raw"

    @property
    def can_download(self) -> bool:
        return self.download and self.downloader is not None and not self.offline


def _fill(look: _Lookup, system: Path | None) -> None:
    """Complete ``raw/`` while holding the lock: in place, from the system copy, or by download."""
    spec, raw = look.spec, look.raw
    state = _inspect(raw, spec)  # another run may have filled it while this one waited
    if state.complete:
        return
    if not state.empty:
        if state.missing:
            raise _incomplete(spec, look.root, raw, state)
        _add_files(raw, state.gzipped, lambda staging: _unpack_in_place(raw, staging, state.gzipped))
    elif system is not None:
        _add_files(raw, spec.files, lambda staging: _unpack_system_copy(spec, system, staging))
    elif not look.can_download or look.downloader is None:  # emptied while this run waited for the lock
        raise _not_found(look)
    else:
        downloader = look.downloader
        try:
            _add_files(raw, spec.files, lambda staging: _download(spec, downloader, staging))
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - any download failure becomes advice
            if not has_files(look.target, spec):
                raise _not_found(look, f"download: failed ({type(exc).__name__}: {exc})") from exc


def _not_found(look: _Lookup, failure: str = "") -> UsageError:
    spec, root, raw = look.spec, look.root, look.raw
    tried = [f"{raw}: no IDX files there"]
    tried += [f"{folder}: not installed" for folder in spec.system_dirs]
    if failure:
        tried.append(failure)
    elif look.offline:
        tried.append(f"download: not attempted ({OFFLINE_ENV} is set)")
    elif not look.download or look.downloader is None:
        tried.append("download: not attempted (download = false)")
    copy = f'point at a copy: `--data DIR` or `dataset.root = "DIR"`, with the IDX files in DIR/{spec.folder}/raw/'
    fixes = [*([spec.install_hint] if spec.install_hint else []), *spec.extra_fixes, copy, *_user_copy_fix(spec, root)]
    return UsageError(
        f"{spec.title} not found. Tried:",
        problems=[*tried, "To fix, either:", *(f"- {fix}" for fix in fixes)],
    )


def _incomplete(spec: IdxDataset, root: str | None, raw: Path, state: _RawState) -> UsageError:
    fixes = [
        f"add the missing files to {raw} (uncompressed, or as NAME.gz to have them unpacked there)",
        f"point `--data DIR` at a new or empty folder, to have {spec.title} put in DIR/{spec.folder}/raw/",
        f"move {raw} aside, to have a new one filled",
        *_user_copy_fix(spec, root),
    ]
    return UsageError(
        f"{spec.title} in {raw} is incomplete: {len(state.missing)} of {len(spec.files)} IDX files "
        "missing (mlrun never changes a folder it did not fill)",
        problems=[*(f"missing: {name}" for name in state.missing), "To fix, either:", *(f"- {fix}" for fix in fixes)],
    )


def _user_copy_fix(spec: IdxDataset, root: str | None) -> list[str]:
    if root and has_files(user_data_dir(), spec):
        return [f"drop `--data` / dataset.root to use the complete copy in {user_data_dir()}"]
    return []


@contextlib.contextmanager
def _filling(target: Path, spec: IdxDataset) -> Iterator[None]:
    """Hold the lock that serialises first-time filling; on failure leave no lock or folder behind."""
    lock = target / f".{spec.folder}.lock"
    created = []
    folder = target
    while not folder.exists():
        created.append(folder)  # innermost first
        folder = folder.parent
    had_lock = lock.exists()
    try:
        with file_lock(lock, wait=True, what=f"{spec.title} in {target}"):
            yield
    except BaseException:
        # A run still waiting on the removed lock re-checks and fills on its own; _add_files
        # never replaces a file, so two fillers cannot clobber each other.
        if not had_lock:
            with contextlib.suppress(OSError):
                lock.unlink()
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: never removes what others put there
        raise


def _add_files(raw: Path, names: Sequence[str], produce: Callable[[Path], None]) -> None:
    """Put the files ``produce`` writes into a scratch folder into ``raw``: all of them or none.

    A new ``raw`` appears at once, complete (a staged folder); into an existing one the
    files are linked one by one, never replacing a file that is there.
    """
    if not raw.exists():
        try:
            with staged_folder(raw, replace=False) as staging:
                produce(staging)
        except OSError:
            # The rename fails when another run got there first: fine if its files are all there.
            if not all((raw / name).is_file() for name in names):
                raise
        return
    added: list[Path] = []
    with tempfile.TemporaryDirectory(prefix=".mlrun-unpack-", dir=raw) as scratch:
        produce(Path(scratch))
        try:
            for name in names:
                if _place(Path(scratch) / name, raw / name):
                    added.append(raw / name)
        except BaseException:
            for path in added:
                path.unlink()
            raise


def _place(source: Path, dest: Path) -> bool:
    """Move ``source`` to ``dest`` unless ``dest`` exists; False when it did."""
    try:
        os.link(source, dest)  # fails if dest exists, unlike a rename
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links
        if dest.exists():
            return False
        os.rename(source, dest)
    return True


def _unpack_in_place(raw: Path, staging: Path, names: Sequence[str]) -> None:
    for name in names:
        _unpack(raw / f"{name}.gz", staging / name)


def _unpack_system_copy(spec: IdxDataset, system: Path, staging: Path) -> None:
    expected = dict(spec.md5)
    for name in spec.files:
        source = _source_file(system, name)
        assert source is not None  # find_system_copy checked
        digest = _unpack(source, staging / name)
        if name in expected and digest != expected[name]:
            fixes = [f"reinstall it ({spec.install_hint})"] if spec.install_hint else []
            raise UsageError(
                f"{source}: checksum mismatch, the system copy of {spec.title} is damaged "
                f"(MD5 of the unpacked file {digest}, the official file's is {expected[name]})",
                problems=["nothing was unpacked. To fix, either:", *(f"- {fix}" for fix in fixes),
                          f"- point `--data DIR` at a good copy, with the IDX files in DIR/{spec.folder}/raw/"],
            )  # fmt: skip


def _download(spec: IdxDataset, downloader: Callable[[Path], None], staging: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="mlrun-download-") as scratch:
        downloader(Path(scratch))
        fetched = Path(scratch) / spec.folder / "raw"
        for name in spec.files:
            shutil.move(str(fetched / name), staging / name)


def _unpack(source: Path, dest: Path) -> str:
    """Copy ``source`` to ``dest``, gunzipping a ``.gz``; returns the MD5 of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    opener = gzip.open if source.suffix == ".gz" else open
    try:
        with opener(source, "rb") as src, open(dest, "wb") as out:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise UsageError(
            f"{source}: not a valid gzip file ({exc or type(exc).__name__})",
            problems=[f"replace it with an intact copy (or with the uncompressed {source.stem})"],
        ) from exc
    return digest.hexdigest()
