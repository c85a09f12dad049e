"""An image file as a run's model input: the run's raw image format, then its evaluation transforms.

A run records in ``run.json`` what one raw dataset sample is before any transform
(``"input": {"mode": "L" or "RGB", "size": [H, W] or null}``) and its class names
(``"classes"``). An image file is opened, converted to that mode, resized to that size
(when the dataset's images have one fixed size), and then put through the recipe's
evaluation transforms (every transform but the random ones, decode-stage ones such as
``resize`` or ``center_crop`` included): exactly what a test sample goes through.
Runs from before these keys were recorded read as 28x28 grayscale, as mlrun used to.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlrun.build import build_component
from mlrun.errors import UsageError
from mlrun.recipe import ComponentSpec, transforms_for
from mlrun.runs import RunFolder

#: The raw image of runs that recorded none (older runs: the MNIST family), as (height, width).
LEGACY_SIZE = (28, 28)
#: Largest image (in pixels) decoded: bigger ones would take gigabytes just to shrink.
MAX_IMAGE_PIXELS = 8192 * 8192
MODES = ("L", "RGB")
#: Transforms that only rescale pixel values: the picture of what the model saw is taken before them.
VALUE_ONLY = frozenset({"normalize", "normalize_preset"})


@dataclass(frozen=True)
class RunInput:
    """What a raw sample of a run's dataset is: PIL mode, size (height, width) or None, class names."""

    mode: str = "L"
    size: tuple[int, int] | None = LEGACY_SIZE
    classes: tuple[str, ...] = ()
    #: False for runs that recorded no ``input`` (the 28x28 grayscale default applies).
    recorded: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The ``input`` object of ``run.json`` (and of an export's sidecar)."""
        return {"mode": self.mode, "size": list(self.size) if self.size else None}


def run_input(run_dir: Path) -> RunInput:
    """Read ``input`` and ``classes`` from a run's ``run.json``; older runs get the 28x28 grayscale default."""
    status = RunFolder(Path(run_dir)).read_status().to_dict()
    path = Path(run_dir) / "run.json"
    classes = status.get("classes")
    names: tuple[str, ...] = ()
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise UsageError(f"{path}: classes: expected a list of class names, got {classes!r}")
        names = tuple(classes)
    raw = status.get("input")
    if raw is None:
        return RunInput(classes=names)
    mode = raw.get("mode") if isinstance(raw, dict) else None
    size = raw.get("size") if isinstance(raw, dict) else None
    if mode not in MODES:
        raise UsageError(f"{path}: input.mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if size is not None and not (
        isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)
    ):
        raise UsageError(f"{path}: input.size: expected [height, width] or null, got {size!r}")
    return RunInput(mode, (size[0], size[1]) if size else None, names, recorded=True)


def open_image(path: Path, mode: str = "L", size: tuple[int, int] | None = LEGACY_SIZE) -> Any:
    """Open an image file (PNG, JPEG, ...) as a PIL image in ``mode``, resized to ``size`` (height, width)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such image file")
    if not path.is_file():
        raise UsageError(f"{path}: not a file; give a PNG or JPEG image")
    try:
        with warnings.catch_warnings():  # PIL warns of sizes our own, lower limit refuses below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)  # reads the header only: the size is known before decoding
        with opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise UsageError(_too_large(path, width, height))
            opened.load()  # decode now, so a truncated file fails here with its name
            image = opened.convert(mode)
    except Image.DecompressionBombError as exc:  # PIL's own, larger limit, raised by open()
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)) // 1_000_000} megapixels" if found else "too many pixels"
        raise UsageError(_too_large(path, None, None, pixels)) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"{path}: not a readable image ({reason}); give a PNG or JPEG file") from exc
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return image


def _too_large(path: Path, width: int | None, height: int | None, pixels: str = "") -> str:
    size = f"{width}x{height} pixels" if width is not None else pixels
    limit = f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels"
    return f"{path}: image too large to read ({size}; at most {limit}); shrink it first"


class EvalPipeline:
    """The recipe's evaluation transforms, step by step, keeping the picture the model saw."""

    def __init__(self, specs: Sequence[ComponentSpec]) -> None:
        self.specs = transforms_for(specs, train=False)
        self.steps = [(spec.component.name, build_component(spec)) for spec in self.specs]

    def __call__(self, sample: Any) -> tuple[Any, Any]:
        """(the model input, the last image-shaped stage before value-only steps such as normalize)."""
        picture = sample
        for name, step in self.steps:
            sample = step(sample)
            if name not in VALUE_ONLY and _image_shaped(sample):
                picture = sample
        return sample, picture


def _image_shaped(sample: Any) -> bool:
    """A PIL image, or a tensor H x W or C x H x W with 1 or 3 channels (not a flattened vector)."""
    if hasattr(sample, "getbands"):
        return True
    shape = getattr(sample, "shape", None)
    return shape is not None and (len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3)))


def picture_array(picture: Any) -> Any:
    """A PIL image as an array (H x W or 3 x H x W, values in [0, 1]) the plot can show; tensors pass through."""
    if hasattr(picture, "getbands"):
        import numpy as np

        array = np.asarray(picture.convert("RGB" if len(picture.getbands()) > 1 else "L"), dtype=np.float64) / 255
        return array.transpose(2, 0, 1) if array.ndim == 3 else array
    return picture
