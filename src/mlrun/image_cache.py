"""Decode once: images decoded, put through a decode stage, cached as uint8 pixels in a memory-mapped file.

Decoding PNG/JPEG files every epoch is what makes image training slow on CPUs.
:func:`decode_once` decodes each image a single time, applies the decode stage (the
recipe's leading deterministic transforms, see :mod:`mlrun.decode_stage`) and writes
the pixels to one file under the user data folder
(``$MLRUN_DATA_DIR/image-cache/``); later runs map that file instead of decoding.

- **Keyed by everything the pixels depend on**: the file list with each file's size
  and modification time, the colour mode and the decode stage's transforms and
  parameters. A changed, added or removed image, or a changed ``resize``, gives
  another key, and the cache is rebuilt. A rebuild after an image changed replaces
  that folder's older cache file; caches for other decode settings (another
  ``resize``, another mode) are kept, so recipes that share a folder don't rebuild
  each other's, and are only removed by hand (``rm -r $MLRUN_DATA_DIR/image-cache``).
- **Atomic**: the file is written under a temporary name and renamed when complete,
  so a run killed during the first decode leaves no half cache (the next run decodes
  again; a leftover temporary file is removed once it is stale).
- **File format**: the pixels (uint8, one row per kept image, ``N x H x W`` or
  ``N x H x W x C``) from offset 0, then a JSON header, its length (8 bytes, little
  endian) and :data:`MAGIC`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import torch

from mlrun.data import user_data_dir
from mlrun.errors import MlrunError, UsageError
from mlrun.files import current_umask
from mlrun.images import BadImage, bad_image_error, open_image

#: The cache's folder under the user data folder.
FOLDER = "image-cache"
#: The last bytes of every complete cache file (bump the digit when the format changes).
MAGIC = b"MLRUNIMG1\n"
_LENGTH = struct.Struct("<Q")
#: Images decoded per batch of work handed to the decoding threads.
CHUNK = 256
#: A temporary file untouched this long belongs to a killed run (a live one writes every chunk).
STALE_SECONDS = 600


@dataclass(frozen=True)
class Decoded:
    """A folder's images after the decode stage, as uint8 pixels (memory-mapped from the cache)."""

    #: One row per kept image: ``N x H x W`` (grayscale) or ``N x H x W x C``.
    pixels: torch.Tensor
    #: The indices (into the decoded file list) of the kept images, one per row of ``pixels``.
    kept: tuple[int, ...]
    #: The images left out (``on_bad_image = "skip"``): ``(path, why)``.
    skipped: tuple[tuple[str, str], ...]
    #: The common ``(height, width)`` of the images as loaded, or None when they differ.
    raw_size: tuple[int, int] | None
    #: The cache file.
    path: Path
    #: Seconds spent decoding now; None when the cache was reused.
    seconds: float | None


def decode_once(
    files: Sequence[Path],
    *,
    mode: str,
    stage: Callable[[Any], Any],
    stage_key: Sequence[Any] = (),
    on_bad_image: str = "error",
    name: str = "",
    what: str = "images",
) -> Decoded:
    """The decoded pixels of ``files`` (loaded in ``mode``, then through ``stage``), from the cache or decoded now.

    ``stage_key`` describes ``stage`` (JSON-able; part of the key). ``name`` identifies
    the collection (a folder): a rebuild replaces the older cache of the same name,
    mode and stage. ``what`` labels the progress bar, shown on a terminal while
    decoding. Raises :class:`UsageError` for an unreadable image (unless
    ``on_bad_image = "skip"``) and for images whose sizes differ after the stage.
    """
    folder = user_data_dir() / FOLDER
    slot = _digest([name, mode, list(stage_key)])
    content = _digest([[str(path), *_stat(path)] for path in files])
    path = folder / f"{slot}-{content}.bin"
    header = _read_header(path)
    seconds = None
    if header is None:
        started = time.monotonic()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            header = _write(path, files, mode, stage, on_bad_image == "skip", what)
        except OSError as exc:
            raise MlrunError(f"could not write the image cache {path}: {exc.strerror or exc}") from exc
        seconds = time.monotonic() - started
        _remove_older(folder, slot, keep=path)
    skipped = tuple((str(files[i]), why) for i, why in header["skipped"])
    if skipped and on_bad_image != "skip":  # a cache built in skip mode, now read in error mode
        raise bad_image_error(Path(skipped[0][0]), skipped[0][1])
    return Decoded(_map(path, header), tuple(header["kept"]), skipped, _size(header["raw_size"]), path, seconds)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:20]


def _stat(path: Path) -> tuple[int, int]:
    try:
        found = path.stat()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    return found.st_size, found.st_mtime_ns


def _size(value: Any) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def _read_header(path: Path) -> dict[str, Any] | None:
    """The header of a complete cache file, or None when there is none (or it is damaged)."""
    try:
        with open(path, "rb") as cache:
            cache.seek(-(len(MAGIC) + _LENGTH.size), os.SEEK_END)
            length = _LENGTH.unpack(cache.read(_LENGTH.size))[0]
            if cache.read() != MAGIC:
                return None
            cache.seek(-(len(MAGIC) + _LENGTH.size + length), os.SEEK_END)
            header: dict[str, Any] = json.loads(cache.read(length))
            data_bytes = cache.tell() - length
    except (OSError, ValueError, struct.error):
        return None
    if data_bytes != header["count"] * int(numpy.prod(header["shape"])):
        return None
    return header


def _map(path: Path, header: dict[str, Any]) -> torch.Tensor:
    """The cached pixels, memory-mapped copy-on-write (a batch function may write to what it is given)."""
    if header["count"] == 0:
        return torch.zeros((0, *header["shape"]), dtype=torch.uint8)
    shape = (header["count"], *header["shape"])
    return torch.from_numpy(numpy.memmap(path, dtype=numpy.uint8, mode="c", shape=shape))


def _write(path: Path, files: Sequence[Path], mode: str, stage: Callable[[Any], Any], skip: bool, what: str) -> dict:
    """Decode every image into a temporary file, then rename it to ``path``; returns the header."""
    handle, temp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~current_umask())  # mkstemp makes 0600; a cache may be shared
        with os.fdopen(handle, "wb") as out:
            header = _decode_into(out, files, mode, stage, skip, what)
            blob = json.dumps(header).encode()
            out.write(blob + _LENGTH.pack(len(blob)) + MAGIC)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return header


def _decode_into(
    out: Any, files: Sequence[Path], mode: str, stage: Callable[[Any], Any], skip: bool, what: str
) -> dict:
    kept: list[int] = []
    skipped: list[tuple[int, str]] = []
    shape: tuple[int, ...] | None = None
    raw_sizes: set[tuple[int, int]] = set()
    first = -1
    with _bar(len(files), what) as bar:
        for index, (pixels, raw_size, why) in enumerate(_decoded(files, mode, stage)):
            bar.update(1)
            if pixels is None:
                if not skip:
                    raise bad_image_error(files[index], why)
                skipped.append((index, why))
                continue
            if shape is None:
                shape, first = pixels.shape, index
            elif pixels.shape != shape:
                raise _size_error(files[first], shape, files[index], pixels.shape, stage)
            raw_sizes.add(raw_size)
            kept.append(index)
            out.write(numpy.ascontiguousarray(pixels).tobytes())
    raw = next(iter(raw_sizes)) if len(raw_sizes) == 1 else None
    return {"count": len(kept), "shape": list(shape or (0,)), "kept": kept, "skipped": skipped, "raw_size": raw}


def _decoded(files: Sequence[Path], mode: str, stage: Callable[[Any], Any]) -> Iterator[tuple[Any, Any, str]]:
    """``(pixels or None, raw (height, width), why it is unreadable)`` for each file, in order.

    PIL decodes and resizes without holding the GIL: threads decode several images at once.
    """

    def one(path: Path) -> tuple[Any, Any, str]:
        try:
            image = open_image(path, mode)
        except BadImage as exc:
            return None, None, str(exc)
        raw_size = (image.height, image.width)
        try:
            result = stage(image)
        except Exception as exc:
            raise UsageError(
                f"{path}: the decode-stage transforms fail on this image: {type(exc).__name__}: {exc}"
            ) from exc
        pixels = numpy.asarray(result)
        if pixels.dtype != numpy.uint8 or pixels.ndim not in (2, 3):
            raise UsageError(
                f"{path}: the decode-stage transforms give {type(result).__name__} of {pixels.dtype} "
                f"{tuple(pixels.shape)}, not an image of uint8 pixels (H x W or H x W x C)",
                problems=["transforms marked decode=True must take and return PIL images"],
            )
        return pixels, raw_size, ""

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(files), CHUNK):
            yield from pool.map(one, files[start : start + CHUNK])


def _size_error(first: Path, shape: Any, other: Path, other_shape: Any, stage: Any) -> UsageError:
    names = list(getattr(stage, "names", ()))
    sizes = f"{first}: {shape[1]}x{shape[0]} pixels, but {other}: {other_shape[1]}x{other_shape[0]}"
    if names:
        return UsageError(
            f"the images differ in size after the decode stage ({', '.join(names)}): {sizes}",
            problems=['give resize both sides (size = [height, width]), or add a "center_crop" transform after it'],
        )
    return UsageError(
        f"the images differ in size and the recipe does not resize them: {sizes}",
        problems=['add a "resize" transform first in [[transforms]], e.g. name = "resize", size = [64, 64]'],
    )


@contextlib.contextmanager
def _bar(total: int, what: str) -> Iterator[Any]:
    """A progress bar on a terminal (stderr), as the training loop's; nothing otherwise."""
    from tqdm import tqdm

    with tqdm(total=total, desc=f"decoding {what}", unit="img", leave=False, disable=not sys.stderr.isatty()) as bar:
        yield bar


def _remove_older(folder: Path, slot: str, *, keep: Path) -> None:
    """Remove the same collection's older cache files, and temporary files of killed runs."""
    now = time.time()
    for path in folder.glob(f"{slot}-*.bin"):
        if path != keep:
            with contextlib.suppress(OSError):
                path.unlink()  # a run still mapping it keeps its pages (POSIX)
    for path in folder.glob(f".{slot}-*.tmp"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > STALE_SECONDS:
                path.unlink()
