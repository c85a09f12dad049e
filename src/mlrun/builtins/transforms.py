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


def random_crop(size: Annotated[int, Gt(0)] = 28, padding: Annotated[int, Ge(0)] = 2) -> Callable[[Sample], Sample]:
    """Pad, then crop a random size x size window (training only)."""
    from torchvision import transforms

    return transforms.RandomCrop(size, padding=padding)


# Batch versions for the in-memory fast path. Each gives, on a batch of raw samples,
# exactly what the per-sample transform gives on each sample (tests check this). The
# engine hands every batch function a tensor of its own, so they may work in place.

Batch = Callable[[torch.Tensor], torch.Tensor]


def to_tensor_batch() -> Batch:
    """uint8 N x H x W (or N x H x W x C) to float N x C x H x W in [0, 1]."""

    def convert(batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() == 3:
            batch = batch.unsqueeze(1)
        elif batch.dim() == 4:
            batch = batch.permute(0, 3, 1, 2).contiguous()
        floats = batch.to(torch.get_default_dtype())
        return floats.div_(255) if batch.dtype == torch.uint8 else floats

    return convert


def normalize_batch(mean: list[float], std: list[float]) -> Batch:
    """(x - mean) / std per channel of an N x C x H x W batch."""
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    return lambda batch: batch.sub_(mean_t.to(batch.dtype)).div_(std_t.to(batch.dtype))


def flatten_batch() -> Batch:
    """N x C x H x W to N x (C*H*W)."""
    return lambda batch: batch.flatten(1)


def _channels_last(batch: torch.Tensor) -> bool:
    """Raw colour samples (uint8 N x H x W x C, as PIL gives them) rather than tensor images (N x C x H x W)."""
    return batch.dim() == 4 and batch.dtype == torch.uint8


def random_horizontal_flip_batch(p: float = 0.5) -> Batch:
    """Mirror each sample of the batch with probability p."""

    def flip(batch: torch.Tensor) -> torch.Tensor:
        chosen = (torch.rand(batch.shape[0]) < p).view(-1, *[1] * (batch.dim() - 1))
        width = -2 if _channels_last(batch) else -1
        return torch.where(chosen, batch.flip(width), batch)

    return flip


def random_crop_batch(size: int = 28, padding: int = 2) -> Batch:
    """Pad every sample, then crop each at its own random offset."""

    def crop(batch: torch.Tensor) -> torch.Tensor:
        if _channels_last(batch):
            return crop_planes(batch.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous()
        return crop_planes(batch)

    def crop_planes(batch: torch.Tensor) -> torch.Tensor:
        *lead, height, width = batch.shape
        flat = batch.reshape(lead[0], -1, height, width)
        padded = torch.nn.functional.pad(flat, (padding,) * 4)
        n = flat.shape[0]
        top = torch.randint(0, padded.shape[-2] - size + 1, (n,))
        left = torch.randint(0, padded.shape[-1] - size + 1, (n,))
        rows = (top[:, None] + torch.arange(size))[:, None, :, None]
        cols = (left[:, None] + torch.arange(size))[:, None, None, :]
        samples = torch.arange(n)[:, None, None, None]
        channels = torch.arange(flat.shape[1])[None, :, None, None]
        return padded[samples, channels, rows, cols].reshape(*lead, size, size)

    return crop


@hookimpl
def register_transforms() -> list[Transform]:
    """ToTensor, Normalize, Flatten and three augmentations."""
    return [
        Transform("to_tensor", to_tensor, "PIL image to float tensor in [0, 1] (torchvision ToTensor)", batch=to_tensor_batch),
        Transform("normalize", normalize, "(x - mean) / std per channel (torchvision Normalize)", validate=_same_length, per_channel=("mean", "std"), batch=normalize_batch),
        Transform("flatten", flatten, "flatten each image to a vector (28x28 -> 784)", batch=flatten_batch),
        Transform("random_horizontal_flip", random_horizontal_flip, "mirror left-right with probability p (train split only)", random=True, batch=random_horizontal_flip_batch),
        Transform("random_rotation", random_rotation, "rotate by up to +/- degrees (train split only; DataLoader path)", random=True),
        Transform("random_crop", random_crop, "pad then crop at a random offset (train split only)", random=True, batch=random_crop_batch),
    ]  # fmt: skip
