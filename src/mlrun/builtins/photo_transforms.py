"""Built-in transforms for photos, as torchvision users know them.

``resize``, ``center_crop`` and ``grayscale`` are deterministic transforms of the decoded
image (``decode=True``): a caching dataset applies the leading run of them once, before
caching. ``random_resized_crop``, ``color_jitter`` and ``random_affine`` are training
augmentations. ``normalize_preset`` normalises with a named dataset's statistics
(``preset = "imagenet"``) so nobody types them.

Everything but ``resize`` has an exact batch version: the per-sample transforms run the
same tensor arithmetic (:mod:`mlrun.builtins.photo_ops`) on a batch of one, and the random
ones draw their numbers in one ``torch.rand(k)`` per sample, where the batch draws
``torch.rand(n, k)``: on the CPU the same seed gives the same numbers, so a batch gives
exactly what the samples one by one give. ``resize`` is PIL's antialiased resize, which
no tensor resize reproduces exactly; it has no batch version (on a caching dataset it
runs once, at decode time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Gt, Le, MaxLen, MinLen

from mlrun import Transform, hookimpl

# The plugin's own helper module, imported as a third-party plugin imports its own code.
from . import photo_ops
from .photo_ops import on_batch, on_sample

Sample = Any
Batch = Callable[[torch.Tensor], torch.Tensor]
Size = Annotated[int, Gt(0)] | Annotated[list[Annotated[int, Gt(0)]], MinLen(2), MaxLen(2)]
Range = Annotated[list[Annotated[float, Gt(0)]], MinLen(2), MaxLen(2)]

#: Per-channel (mean, std) of well-known training sets, for ``normalize_preset``.
PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
}


def _pair(size: int | list[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def resize(size: Size = 32) -> Callable[[Sample], Sample]:
    """torchvision Resize: an int resizes the shorter side (keeping the aspect ratio), [h, w] exactly."""
    from torchvision import transforms

    return transforms.Resize(size if isinstance(size, int) else list(size), antialias=True)


def center_crop(size: Size = 28) -> Callable[[Sample], Sample]:
    """The central size x size (or [h, w]) window; zero padding where the image is smaller."""
    height, width = _pair(size)
    return on_sample(lambda x: photo_ops.center_crop(x, height, width))


def center_crop_batch(size: Size = 28) -> Batch:
    """center_crop on every sample of a batch."""
    height, width = _pair(size)
    return on_batch(lambda x: photo_ops.center_crop(x, height, width))


def grayscale(num_output_channels: Literal[1, 3] = 1) -> Callable[[Sample], Sample]:
    """Luminance (PIL's RGB-to-L on images), as 1 channel or 3 equal ones (for RGB networks)."""
    return on_sample(lambda x: photo_ops.grayscale(x, num_output_channels))


def grayscale_batch(num_output_channels: Literal[1, 3] = 1) -> Batch:
    """grayscale on every sample of a batch."""
    return on_batch(lambda x: photo_ops.grayscale(x, num_output_channels))


def normalize_preset(preset: Literal["imagenet", "mnist", "fashion_mnist"] = "imagenet") -> Callable[[Sample], Sample]:
    """(x - mean) / std per channel with a named dataset's statistics, on a tensor image."""
    normalize = normalize_preset_batch(preset)
    return lambda tensor: normalize(tensor.unsqueeze(0).clone())[0]  # never the caller's tensor, in place


def normalize_preset_batch(preset: Literal["imagenet", "mnist", "fashion_mnist"] = "imagenet") -> Batch:
    """normalize_preset on an N x C x H x W float batch."""
    mean, std = (torch.tensor(values).view(1, -1, 1, 1) for values in PRESETS[preset])

    def normalize(batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() != 4 or not batch.is_floating_point() or batch.shape[1] != mean.shape[1]:
            wanted = mean.shape[1]
            raise ValueError(
                f"normalize_preset '{preset}' is for {wanted}-channel float images after to_tensor, got "
                f"{list(batch.shape[1:])} {batch.dtype}; put it after to_tensor"
                + (", and add grayscale with num_output_channels = 3 before to_tensor" if wanted == 3 else "")
            )
        return batch.sub_(mean.to(batch.dtype)).div_(std.to(batch.dtype))

    return normalize


def _ranges(brightness: float, contrast: float, saturation: float, hue: float) -> list[tuple[float, float]]:
    return [(max(0.0, 1 - b), 1 + b) for b in (brightness, contrast, saturation)] + [(-hue, hue)]


def color_jitter(
    brightness: Annotated[float, Ge(0)] = 0.2,
    contrast: Annotated[float, Ge(0)] = 0.2,
    saturation: Annotated[float, Ge(0)] = 0.2,
    hue: Annotated[float, Ge(0), Le(0.5)] = 0.0,
) -> Callable[[Sample], Sample]:
    """torchvision ColorJitter: factors drawn in [1 - x, 1 + x] (hue in [-hue, hue]), applied in random order."""
    return on_sample(_jitter(brightness, contrast, saturation, hue))


def color_jitter_batch(
    brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.0
) -> Batch:
    """color_jitter with each sample's own order and factors (``torch.rand(n, 8)``)."""
    return on_batch(_jitter(brightness, contrast, saturation, hue))


def _jitter(brightness: float, contrast: float, saturation: float, hue: float) -> photo_ops.Op:
    ranges = _ranges(brightness, contrast, saturation, hue)
    return lambda x: photo_ops.color_jitter(x, torch.rand(x.shape[0], 8), ranges)


def _ordered(params: Mapping[str, Any]) -> None:
    """Ranges are [low, high]; a crop's share of the area is at most 1."""
    for name in ("scale", "ratio"):
        low, high = params.get(name, (0, 0))
        if low > high:
            raise ValueError(f"{name}: [{low}, {high}] must be [low, high] with low <= high")
    if "ratio" in params and params["scale"][1] > 1:
        raise ValueError(f"scale: a share of the image's area, at most 1, got {params['scale'][1]}")


def random_resized_crop(
    size: Size = 28,
    scale: Range = [0.08, 1.0],  # noqa: B006 - never mutated
    ratio: Range = [3 / 4, 4 / 3],  # noqa: B006 - never mutated
) -> Callable[[Sample], Sample]:
    """torchvision RandomResizedCrop: a random box (share of the area in scale, aspect in ratio) resized to size."""
    return on_sample(_crop(size, scale, ratio))


def random_resized_crop_batch(
    size: Size = 28,
    scale: Range = [0.08, 1.0],  # noqa: B006 - never mutated
    ratio: Range = [3 / 4, 4 / 3],  # noqa: B006 - never mutated
) -> Batch:
    """random_resized_crop with each sample's own box (``torch.rand(n, 40)``), bilinear."""
    return on_batch(_crop(size, scale, ratio))


def _crop(size: int | list[int], scale: list[float], ratio: list[float]) -> photo_ops.Op:
    height, width = _pair(size)

    def crop(x: torch.Tensor) -> torch.Tensor:
        boxes = photo_ops.crop_boxes(torch.rand(x.shape[0], 40), x.shape[-2], x.shape[-1], scale, ratio)
        return photo_ops.resized_crop(x, boxes, height, width)

    return crop


def random_affine(
    degrees: Annotated[float, Ge(0), Le(180)] = 10.0,
    translate: Annotated[list[Annotated[float, Ge(0), Le(1)]], MinLen(2), MaxLen(2)] = [0.0, 0.0],  # noqa: B006
    scale: Range = [1.0, 1.0],  # noqa: B006 - never mutated
    shear: Annotated[float, Ge(0), Le(89)] = 0.0,
) -> Callable[[Sample], Sample]:
    """torchvision RandomAffine: rotate by up to +/- degrees, shift by up to translate x size, zoom in scale, shear x."""
    return on_sample(_affine(degrees, translate, scale, shear))


def random_affine_batch(
    degrees: float = 10.0,
    translate: list[float] = [0.0, 0.0],  # noqa: B006 - never mutated
    scale: list[float] = [1.0, 1.0],  # noqa: B006 - never mutated
    shear: float = 0.0,
) -> Batch:
    """random_affine with each sample's own draws (``torch.rand(n, 5)``), nearest neighbour, fill 0."""
    return on_batch(_affine(degrees, translate, scale, shear))


def _affine(degrees: float, translate: list[float], scale: list[float], shear: float) -> photo_ops.Op:
    return lambda x: photo_ops.affine(x, torch.rand(x.shape[0], 5), degrees, translate, scale, shear)


@hookimpl
def register_transforms() -> list[Transform]:
    """Resize, crops, grayscale, colour and affine jitter, and preset normalisation."""
    return [
        Transform("resize", resize, "resize (int: shorter side, keeping the aspect ratio; [h, w]: exactly), antialiased; decode step, no batch version", decode=True),
        Transform("center_crop", center_crop, "the central size x size window (zero-padded if larger); decode step", batch=center_crop_batch, decode=True),
        Transform("grayscale", grayscale, "luminance as 1 channel, or 3 equal ones for RGB networks; decode step", batch=grayscale_batch, decode=True),
        Transform("normalize_preset", normalize_preset, "(x - mean) / std with a named dataset's statistics (imagenet, mnist, fashion_mnist)", batch=normalize_preset_batch),
        Transform("random_resized_crop", random_resized_crop, "random box (area share in scale, aspect in ratio) resized to size, bilinear (train split only)", random=True, validate=_ordered, batch=random_resized_crop_batch),
        Transform("color_jitter", color_jitter, "random brightness, contrast, saturation, hue in random order (train split only)", random=True, batch=color_jitter_batch),
        Transform("random_affine", random_affine, "random rotation, shift, zoom and shear, nearest, fill 0 (train split only)", random=True, validate=_ordered, batch=random_affine_batch),
    ]  # fmt: skip
