"""Built-in datasets: Fashion-MNIST and MNIST through torchvision, and a synthetic one for smoke tests."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
from annotated_types import Ge, Gt, Le

from mlrun import Dataset, hookimpl
from mlrun.data import IdxDataset, resolve_root
from mlrun.idx import read_split

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGIT_CLASSES = tuple(str(d) for d in range(10))

FASHION_MNIST = IdxDataset(
    title="Fashion-MNIST",
    folder="FashionMNIST",
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    install_hint="install Debian's copy: `sudo apt-get install dataset-fashion-mnist`",
    # MD5s of the official files, uncompressed: torchvision's list (FashionMNIST.resources)
    # is of the .gz files, which Debian recompressed, so their MD5s differ; the contents do not.
    md5=(
        ("train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        ("train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9"),
        ("t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a"),
        ("t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965"),
    ),
)
MNIST = IdxDataset(title="MNIST", folder="MNIST")


@functools.cache
def _lean(dataset_class: type) -> type:
    """The torchvision dataset class, reading its IDX files with half the peak memory.

    Everything else (samples, transforms, download) is torchvision's; a test checks
    that the tensors are identical to torchvision's own reader.
    """

    class Lean(dataset_class):  # type: ignore[misc, valid-type]
        def _load_data(self) -> tuple[torch.Tensor, torch.Tensor]:
            # The files are checked here, when the dataset is built: a bad file stops the run
            # before training, and before anything is allocated (read_split).
            prefix = "train" if self.train else "t10k"
            raw = Path(self.raw_folder)
            images, labels = read_split(
                raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte",
                num_classes=len(self.classes),
            )  # fmt: skip
            return images, labels.long()

    # torchvision derives the data folder from __name__ (ROOT/FashionMNIST/raw); pickle
    # finds the class by __qualname__, served by the module's __getattr__ (DataLoader workers).
    Lean.__name__ = dataset_class.__name__
    Lean.__qualname__ = f"Lean{dataset_class.__name__}"
    Lean.__module__ = __name__
    return Lean


def __getattr__(name: str) -> type:
    """LeanFashionMNIST / LeanMNIST, built on first use (torchvision is imported lazily)."""
    if name in ("LeanFashionMNIST", "LeanMNIST"):
        from torchvision import datasets

        return _lean(getattr(datasets, name.removeprefix("Lean")))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fashion_mnist(
    *,
    train: bool,
    transform: Callable[[Any], Any] | None,
    root: str | None = None,
    download: bool = True,
) -> torch.utils.data.Dataset:
    """Fashion-MNIST (60k train / 10k test 28x28 grayscale clothing images)."""
    from torchvision import datasets

    folder = resolve_root(
        FASHION_MNIST,
        root,
        download=download,
        downloader=lambda d: datasets.FashionMNIST(str(d), train=True, download=True),
    )
    return _lean(datasets.FashionMNIST)(str(folder), train=train, transform=transform, download=False)


def mnist(
    *,
    train: bool,
    transform: Callable[[Any], Any] | None,
    root: str | None = None,
    download: bool = True,
) -> torch.utils.data.Dataset:
    """MNIST handwritten digits (60k train / 10k test 28x28 grayscale images)."""
    from torchvision import datasets

    folder = resolve_root(
        MNIST,
        root,
        download=download,
        downloader=lambda d: datasets.MNIST(str(d), train=True, download=True),
    )
    return _lean(datasets.MNIST)(str(folder), train=train, transform=transform, download=False)


class SyntheticImages(torch.utils.data.Dataset):
    """Random 28x28 uint8 images whose label is encoded in which block is bright.

    Shaped like torchvision's MNIST (``data``, ``targets``, PIL samples) so every
    transform and model that works on MNIST works here; learnable in one epoch.
    """

    def __init__(self, size: int, num_classes: int, seed: int, transform: Callable[[Any], Any] | None) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.targets = torch.randint(0, num_classes, (size,), generator=generator)
        noise = torch.randint(0, 96, (size, 28, 28), generator=generator, dtype=torch.uint8)
        rows = (self.targets * 28) // num_classes
        for i, row in enumerate(rows.tolist()):
            noise[i, row : row + max(28 // num_classes, 2), :] = 255
        self.data = noise
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        image = Image.fromarray(self.data[index].numpy(), mode="L")
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


def synthetic(
    *,
    train: bool,
    transform: Callable[[Any], Any] | None,
    size: Annotated[int, Gt(0)] = 2000,
    num_classes: Annotated[int, Ge(2)] = 10,
    seed: Annotated[int, Ge(0), Le(2**32 - 1)] = 0,
) -> torch.utils.data.Dataset:
    """Generated 28x28 images with learnable labels; no files needed (for smoke tests)."""
    split_seed = seed if train else seed + 1
    split_size = size if train else max(size // 5, 1)
    return SyntheticImages(split_size, num_classes, split_seed, transform)


def raw_tensors(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw uint8 images (N x 28 x 28) and labels of an MNIST-style dataset (fast path)."""
    return dataset.data, dataset.targets


@hookimpl
def register_datasets() -> list[Dataset]:
    """Fashion-MNIST, MNIST and a synthetic dataset."""
    return [
        Dataset("fashion_mnist", fashion_mnist, "Fashion-MNIST clothing images via torchvision (28x28, 10 classes)", classes=FASHION_MNIST_CLASSES, channels=1, tensors=raw_tensors),
        Dataset("mnist", mnist, "MNIST handwritten digits via torchvision (28x28, 10 classes)", classes=DIGIT_CLASSES, channels=1, tensors=raw_tensors),
        Dataset("synthetic", synthetic, "generated 28x28 images for smoke tests (no download)", channels=1, tensors=raw_tensors),
    ]  # fmt: skip
