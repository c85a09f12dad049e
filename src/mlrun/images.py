"""Image files in torchvision's ImageFolder layout (``ROOT/<class>/<image>``): find them, open them.

For plugins with image datasets of their own, as for the built-in ``image_folder``:
:func:`scan` lists a folder's classes and images, refusing a layout it cannot use
with the folder named and the fix; :func:`open_image` opens one image in a colour
mode, raising :class:`BadImage` for a file that is not a readable image. Decoding
every image once and caching the pixels is :mod:`mlrun.image_cache`.

Relative folders are taken from the current folder, as ``dataset.root`` is for
every dataset (``--data DIR`` makes it absolute).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrun.errors import UsageError

#: The file extensions taken as images (torchvision's ``IMG_EXTENSIONS``), compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: The colour modes an image is loaded in: grayscale or RGB.
MODES = ("L", "RGB")
LAYOUT = "image_folder expects one subfolder per class, each holding that class's images: ROOT/<class>/<image>"
#: PIL modes taken as grayscale when the mode is chosen from the images ("auto").
_GRAY = frozenset({"1", "L", "LA", "I", "I;16", "F"})


class BadImage(ValueError):
    """A file that cannot be read as an image; the message says why."""


@dataclass(frozen=True)
class ImageFiles:
    """The images of one folder: each image's path and label, and the class names (label order)."""

    root: Path
    classes: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: tuple[int, ...]


def folder(value: str) -> Path:
    """The folder a recipe setting names, made absolute (relative to the current folder)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def scan(root: Path, *, setting: str = "dataset.root", classes: Sequence[str] | None = None) -> ImageFiles:
    """The classes and images under ``root`` (sorted, as torchvision's ``ImageFolder`` sorts them).

    ``classes``: take these class names (a training folder's) instead of the folder's own:
    the folder may lack some, but a subfolder that is not one of them is refused.
    Raises :class:`UsageError` naming the folder and the fix for a missing or empty
    folder, one without class subfolders, and a class without images.
    """
    where = f"{setting}: {root}"
    if not root.is_dir():
        raise UsageError(
            f"{where}: {'not a folder' if root.exists() else 'no such folder'}",
            problems=[
                f"point {setting} (or `--data DIR`) at a folder of images; {LAYOUT}",
                "a relative path is taken from the current folder, not the recipe's",
            ],
        )
    entries = sorted((e for e in os.scandir(root) if not e.name.startswith(".")), key=lambda e: e.name)
    subfolders = [e.name for e in entries if e.is_dir()]
    if not entries:
        raise UsageError(f"{where}: the folder is empty", problems=[f"put the images in it; {LAYOUT}"])
    if not subfolders:
        loose = sum(1 for e in entries if _is_image(e.name))
        raise UsageError(
            f"{where}: no class subfolders ({loose} image file{'s' if loose != 1 else ''} directly in it)",
            problems=[f"move the images into one subfolder per class, such as {root / 'cat' / 'image1.png'}; {LAYOUT}"],
        )
    names = tuple(classes) if classes is not None else tuple(subfolders)
    unknown = [name for name in subfolders if name not in names]
    if unknown:
        raise UsageError(
            f"{where}: class folder{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"not among the training classes ({', '.join(names)})",
            problems=[
                "give the test folder the same class subfolders as the training folder (names are case-sensitive)"
            ],
        )
    paths: list[Path] = []
    labels: list[int] = []
    for name in subfolders:
        found = _images_under(root / name)
        if not found:
            raise UsageError(
                f"{setting}: {root / name}: class '{name}' has no images (looked for {', '.join(IMAGE_EXTENSIONS)})",
                problems=[f"add images to {root / name}, or remove the folder to drop the class"],
            )
        paths += found
        labels += [names.index(name)] * len(found)
    return ImageFiles(root, names, tuple(paths), tuple(labels))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _images_under(folder: Path) -> list[Path]:
    """The image files anywhere under ``folder``, in a fixed (sorted) order."""
    found = []
    for current, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(current) / f for f in sorted(files) if _is_image(f)]
    return found


def open_image(path: Path, mode: str) -> Any:
    """The image at ``path``, fully decoded and converted to ``mode`` ("L" or "RGB"), as a PIL image.

    Raises :class:`BadImage` (saying why) for a file that cannot be read or decoded.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        reason = str(exc) or type(exc).__name__
        raise BadImage(f"not a readable image ({type(exc).__name__}: {reason})") from exc


def image_mode(paths: Sequence[Path]) -> str:
    """The mode ``"auto"`` loads a folder's images in: "L" when its first readable image is grayscale, else "RGB".

    Unreadable files are passed over here: they are reported (or skipped) when decoded, and
    must not decide the channel count of the images that are fine.
    """
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as image:
                return "L" if image.mode in _GRAY else "RGB"
        except Exception:  # noqa: BLE001, S112 - reported when it is decoded
            continue
    return "RGB"


def bad_image_error(path: Path, reason: str) -> UsageError:
    """The error for an image that cannot be read (``on_bad_image = "error"``)."""
    return UsageError(
        f"{path}: {reason}",
        problems=[
            "replace or remove the file",
            'or set dataset.on_bad_image = "skip" to leave out unreadable images (the run log counts them)',
        ],
    )
