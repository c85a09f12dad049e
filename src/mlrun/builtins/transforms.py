"""Built-in per-sample transforms, as torchvision users know them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

import torch
from annotated_types import Ge, Gt, Le, MinLen

from mlrun import Transform, hookimpl

Sample = Any


def to_tensor() -> Callable[[Sample], torch.Tensor]:
    """PIL image or ndarray (H x W x C, 0..255) to a float tensor (C x H x W, 0..1)."""
    from torchvision import transforms

    return transforms.ToTensor()


def normalize(
    mean: Annotated[list[float], MinLen(1)],
    std: Annotated[list[Annotated[float, Gt(0)]], MinLen(1)],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-channel (x - mean) / std on a tensor image."""
    from torchvision import transforms

    return transforms.Normalize(mean, std)


def _same_length(params: Mapping[str, Any]) -> None:
    mean, std = params["mean"], params["std"]
    if len(mean) != len(std):
        raise ValueError(f"mean has {len(mean)} values but std has {len(std)}; give one per channel")


def flatten() -> Callable[[torch.Tensor], torch.Tensor]:
    """Flatten a tensor image to one vector (1 x 28 x 28 -> 784)."""
    return torch.flatten


def random_horizontal_flip(
    p: Annotated[float, Ge(0), Le(1)] = 0.5,
) -> Callable[[Sample], Sample]:
    """Mirror the image left-right with probability p (training only)."""
    from torchvision import transforms

    return transforms.RandomHorizontalFlip(p)


def random_rotation(degrees: Annotated[float, Ge(0), Le(180)] = 10.0) -> Callable[[Sample], Sample]:
    """Rotate by a random angle in [-degrees, degrees] (training only)."""
    from torchvision import transforms

    return transforms.RandomRotation(degrees)


def random_crop(
    size: Annotated[int, Gt(0)] = 28, padding: Annotated[int, Ge(0)] = 2
) -> Callable[[Sample], Sample]:
    """Pad, then crop a random size x size window (training only)."""
    from torchvision import transforms

    return transforms.RandomCrop(size, padding=padding)


@hookimpl
def register_transforms() -> list[Transform]:
    """ToTensor, Normalize, Flatten and three augmentations."""
    return [
        Transform("to_tensor", to_tensor, "PIL image to float tensor in [0, 1] (torchvision ToTensor)"),
        Transform("normalize", normalize, "(x - mean) / std per channel (torchvision Normalize)", validate=_same_length, per_channel=("mean", "std")),
        Transform("flatten", flatten, "flatten each image to a vector (28x28 -> 784)"),
        Transform("random_horizontal_flip", random_horizontal_flip, "mirror left-right with probability p (train split only)", random=True),
        Transform("random_rotation", random_rotation, "rotate by up to +/- degrees (train split only)", random=True),
        Transform("random_crop", random_crop, "pad then crop at a random offset (train split only)", random=True),
    ]  # fmt: skip
