"""Datasets to build on: the built-in MNIST family and mlrun's offline-first data lookup.

A plugin that offers a variant of a built-in dataset (a subset, other labels) builds it
from these factories, the very ones behind ``fashion_mnist`` and ``mnist``, so it finds
the files the same way: ``root`` when given, else the user data folder
(``$MLRUN_DATA_DIR``), a system copy (Debian's ``dataset-fashion-mnist``), then
torchvision's download; errors say what was tried and how to fix it::

    from mlrun.datasets import FASHION_MNIST_CLASSES, fashion_mnist, subset, raw_tensors

    def fashion_subset(*, train: bool, transform, size: Annotated[int, Gt(0)] = 1000,
                       root: str | None = None) -> torch.utils.data.Dataset:
        return subset(fashion_mnist(train=train, transform=transform, root=root), range(size))

    Dataset("fashion_subset", fashion_subset, "...", classes=FASHION_MNIST_CLASSES,
            channels=1, tensors=raw_tensors)

For other datasets in the MNIST file format, describe the files with :class:`IdxDataset`
and call :func:`resolve_root` to get a folder that holds them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from mlrun.builtins.datasets import DIGIT_CLASSES, FASHION_MNIST, FASHION_MNIST_CLASSES, MNIST, fashion_mnist, mnist
from mlrun.data import IdxDataset, resolve_root, user_data_dir


def subset(dataset: Any, indices: Iterable[int]) -> torch.utils.data.Subset:
    """The samples of ``dataset`` at ``indices`` (out-of-range indices are dropped), in that order."""
    size = len(dataset)
    return torch.utils.data.Subset(dataset, [i for i in indices if 0 <= i < size])


def raw_tensors(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw images and labels of an MNIST-style dataset, or of a :func:`subset` of one.

    For ``Dataset(tensors=raw_tensors)``: uint8 ``N x H x W`` images, exactly as the first
    transform receives them one by one, and the labels as a 1-d integer tensor.
    """
    if isinstance(dataset, torch.utils.data.Subset):
        images, labels = raw_tensors(dataset.dataset)
        chosen = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return images.index_select(0, chosen), labels.index_select(0, chosen)
    return dataset.data, torch.as_tensor(dataset.targets)


__all__ = [
    "DIGIT_CLASSES",
    "FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "MNIST",
    "IdxDataset",
    "fashion_mnist",
    "mnist",
    "raw_tensors",
    "resolve_root",
    "subset",
    "user_data_dir",
]
