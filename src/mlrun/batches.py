"""Where batches come from: the in-memory fast path, or a classic DataLoader.

Both paths draw the order of samples from the same seeded generator (one
permutation per epoch), so for the same recipe they feed the model the same
samples in the same order. The fast path keeps the dataset's raw samples as one
tensor and applies each transform's batch version to whole batches; it is taken
when the dataset can hand over its samples as tensors and every transform has a
batch version. Otherwise the DataLoader applies the per-sample transforms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from mlrun.recipe import ComponentSpec, Recipe, memory_path_blocker

Batch = tuple[torch.Tensor, torch.Tensor]


class EpochOrder:
    """A seeded order of sample indices: a fresh permutation each epoch (or 0..n-1 unshuffled)."""

    def __init__(self, size: int, *, shuffle: bool, seed: int) -> None:
        self.size = size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def next_epoch(self) -> torch.Tensor:
        """The indices of the next epoch, in order."""
        if not self.shuffle:
            return torch.arange(self.size)
        return torch.randperm(self.size, generator=self.generator)

    def state(self) -> torch.Tensor:
        """The generator state, to resume the same sequence of permutations."""
        return self.generator.get_state()

    def restore(self, state: torch.Tensor) -> None:
        """Continue the sequence from a saved :meth:`state`."""
        self.generator.set_state(state)


class _OrderSampler(Sampler[int]):
    def __init__(self, order: EpochOrder) -> None:
        self.order = order

    def __iter__(self) -> Iterator[int]:
        return iter(self.order.next_epoch().tolist())

    def __len__(self) -> int:
        return self.order.size


class TensorBatches:
    """Batches sliced from in-memory tensors, transformed batch-wise."""

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor],
        batch_size: int,
        order: EpochOrder,
    ) -> None:
        self.inputs, self.labels = inputs, labels.long()
        self.transform = transform
        self.batch_size = batch_size
        self.order = order

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        indices = self.order.next_epoch()
        for start in range(0, len(indices), self.batch_size):
            chosen = indices[start : start + self.batch_size]
            # index_select is markedly cheaper than fancy indexing for this gather.
            batch = self.inputs.index_select(0, chosen)
            yield self.transform(batch), self.labels.index_select(0, chosen)


@dataclass(frozen=True)
class DataPlan:
    """Which data path a run takes, and why (shown in the run log)."""

    path: str
    reason: str


def plan(recipe: Recipe) -> DataPlan:
    """Choose the data path from the recipe's components and ``train.data_path``."""
    wanted = recipe.train.data_path
    if wanted == "loader":
        return DataPlan("loader", "train.data_path = \"loader\"")
    blocker = memory_blocker(recipe)
    if blocker is None:
        why = "tensors in memory, transforms applied per batch"
        return DataPlan("memory", why if wanted == "auto" else f"train.data_path = \"memory\"; {why}")
    return DataPlan("loader", blocker)


def memory_blocker(recipe: Recipe) -> str | None:
    """Why the in-memory path cannot serve this recipe, or None if it can."""
    blocker = memory_path_blocker(recipe.dataset.component, recipe.transforms)
    if blocker is None and recipe.train.num_workers > 0 and recipe.train.data_path == "auto":
        return "train.num_workers > 0 asks for DataLoader workers"
    return blocker


def batch_pipeline(specs: list[ComponentSpec], *, train: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Compose the batch versions of the transforms; random ones apply to training only."""
    steps = [
        spec.component.batch(**spec.params)  # type: ignore[attr-defined]
        for spec in specs
        if train or not getattr(spec.component, "random", False)
    ]

    def pipeline(batch: torch.Tensor) -> torch.Tensor:
        for step in steps:
            batch = step(batch)
        return batch

    return pipeline


def train_batches(recipe: Recipe, dataset: Any, data_plan: DataPlan, order: EpochOrder) -> Any:
    """An iterable of training batches for one epoch at a time."""
    settings = recipe.train
    if data_plan.path == "memory":
        inputs, labels = recipe.dataset.component.tensors(dataset)  # type: ignore[attr-defined]
        return TensorBatches(
            inputs, labels, batch_pipeline(recipe.transforms, train=True), settings.batch_size, order
        )
    # The loader's own generator only seeds its workers; keeping it separate leaves the
    # global generator (weights, dropout) untouched, exactly as on the memory path.
    return DataLoader(
        dataset, batch_size=settings.batch_size, sampler=_OrderSampler(order),
        num_workers=settings.num_workers, generator=torch.Generator().manual_seed(settings.seed),
    )  # fmt: skip


def eval_batches(recipe: Recipe, dataset: Any, data_plan: DataPlan) -> Any:
    """An iterable of evaluation batches, in dataset order."""
    settings = recipe.train
    order = EpochOrder(len(dataset), shuffle=False, seed=0)
    if data_plan.path == "memory":
        inputs, labels = recipe.dataset.component.tensors(dataset)  # type: ignore[attr-defined]
        return TensorBatches(
            inputs, labels, batch_pipeline(recipe.transforms, train=False),
            settings.eval_batch_size, order,
        )  # fmt: skip
    return DataLoader(
        dataset, batch_size=settings.eval_batch_size, sampler=_OrderSampler(order),
        num_workers=settings.num_workers, generator=torch.Generator().manual_seed(settings.seed),
    )  # fmt: skip
