"""Finding dataset files offline first: an explicit root, the user data dir, a system copy, a download.

torchvision's MNIST-family datasets read uncompressed IDX files from
``ROOT/<Folder>/raw/`` and skip their download when the files are there. This
module makes sure they are there, from the cheapest source that has them, and
never leaves a half-filled folder behind when every source fails.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlrun.errors import UsageError
from mlrun.files import nearest_existing, staged_folder

DATA_DIR_ENV = "MLRUN_DATA_DIR"
OFFLINE_ENV = "MLRUN_OFFLINE"


@dataclass(frozen=True)
class IdxDataset:
    """Where an MNIST-style dataset lives: torchvision's folder name, its files, system copies."""

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


def resolve_root(
    spec: IdxDataset,
    root: str | None,
    *,
    download: bool,
    downloader: Callable[[Path], None] | None = None,
) -> Path:
    """Return a root folder that holds the dataset in torchvision's raw layout.

    Order: the explicit ``root``, the user data dir, a system copy (unpacked once
    into the target root), then ``downloader`` (torchvision's download). Raises a
    :class:`UsageError` naming everything tried when all of them fail.
    """
    tried: list[str] = []
    target = Path(root).expanduser() if root else user_data_dir()
    candidates = [target, user_data_dir()] if root else [target]
    for candidate in candidates:
        if has_files(candidate, spec):
            return candidate
        tried.append(f"{candidate / spec.folder / 'raw'}: no IDX files there")

    system = find_system_copy(spec)
    if system is not None:
        _ensure_writable(target, spec)
        with staged_folder(target / spec.folder / "raw", replace=True) as staging:
            for name in spec.files:
                _unpack(_source_file(system, name), staging / name)  # type: ignore[arg-type]
        return target
    for folder in spec.system_dirs:
        tried.append(f"{folder}: not installed")

    offline = os.environ.get(OFFLINE_ENV, "") not in ("", "0")
    if download and downloader is not None and not offline:
        _ensure_writable(target, spec)
        try:
            with staged_folder(target / spec.folder / "raw", replace=True) as staging:
                with tempfile.TemporaryDirectory(prefix="mlrun-download-") as scratch:
                    downloader(Path(scratch))
                    fetched = Path(scratch) / spec.folder / "raw"
                    for name in spec.files:
                        shutil.move(str(fetched / name), staging / name)
            return target
        except Exception as exc:  # noqa: BLE001 - any download failure becomes advice
            tried.append(f"download: failed ({type(exc).__name__}: {exc})")
    else:
        reason = f"{OFFLINE_ENV} is set" if offline else "download = false"
        tried.append(f"download: not attempted ({reason})")

    fixes = [spec.install_hint] if spec.install_hint else []
    fixes += list(spec.extra_fixes)
    fixes.append(
        f"point at a copy: `--data DIR` or `dataset.root = \"DIR\"`, with the IDX files in "
        f"DIR/{spec.folder}/raw/"
    )
    raise UsageError(
        f"{spec.title} not found. Tried:",
        problems=[*tried, "To fix, either:", *(f"- {fix}" for fix in fixes)],
    )


def read_idx(path: Path) -> Any:
    """Read an uncompressed unsigned-byte IDX file (MNIST format) into a uint8 tensor.

    The file is read straight into the tensor's memory: torchvision's reader holds
    the file twice while parsing (bytes, then a bytearray copy), which for the 47 MB
    Fashion-MNIST training images is the largest memory peak of a whole run.
    """
    import struct

    import torch

    with open(path, "rb") as handle:
        zero, kind, dims = struct.unpack(">HBB", handle.read(4))
        if zero != 0 or kind != 0x08 or not 1 <= dims <= 3:
            raise UsageError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
        shape = struct.unpack(f">{dims}I", handle.read(4 * dims))
        data = torch.empty(shape, dtype=torch.uint8)
        view = memoryview(data.numpy()).cast("B")
        if handle.readinto(view) != len(view):
            raise UsageError(f"{path}: truncated IDX file; delete it to have it unpacked again")
    return data


def _ensure_writable(target: Path, spec: IdxDataset) -> None:
    existing = nearest_existing(target)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot store {spec.title} under {target}: {existing} is not writable",
            problems=["choose a writable data folder with `--data DIR` or $" + DATA_DIR_ENV],
        )


def _unpack(source: Path, dest: Path) -> None:
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rb") as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, length=1 << 20)
