"""Write small MNIST-style IDX files, so tests run torchvision's real loading code offline."""

from __future__ import annotations

import struct
from pathlib import Path

import torch

FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def make_images(count: int, seed: int, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy 28x28 uint8 images whose label is the row band that is bright: easy to learn."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (count,), generator=generator, dtype=torch.uint8)
    images = torch.randint(0, 80, (count, 28, 28), generator=generator, dtype=torch.uint8)
    for i, label in enumerate(labels.tolist()):
        top = label * 28 // num_classes
        images[i, top : top + 2, :] = 255
    return images, labels


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor in the IDX format (magic 0x08 = unsigned byte, then the dimensions)."""
    header = struct.pack(">HBB", 0, 0x08, tensor.dim())
    header += b"".join(struct.pack(">I", d) for d in tensor.shape)
    path.write_bytes(header + tensor.contiguous().numpy().tobytes())


def write_dataset(root: Path, folder: str, train: int = 600, test: int = 200, seed: int = 0) -> Path:
    """Write ROOT/<folder>/raw/ with train and test splits; returns ROOT."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for is_train, count in ((True, train), (False, test)):
        images, labels = make_images(count, seed + (0 if is_train else 1))
        write_idx(raw / FILES[is_train][0], images)
        write_idx(raw / FILES[is_train][1], labels)
    return root
