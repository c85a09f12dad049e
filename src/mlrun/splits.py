"""The validation split: a seeded, stratified share of the training set, and its per-rank shards.

The split depends only on the training labels, the fraction and the seed (a generator of
its own, on the CPU), so it is the same on both data paths and on every DDP rank. Each
class gives ``round(fraction x its count)`` samples (halves round up), and at least one
when it has two or more; every class keeps at least one training sample. A fraction that
cannot give every class both is refused, naming the classes and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from mlrun.errors import UsageError

#: The recipe setting the messages name.
SETTING = "train.val_fraction"
#: At most this many classes are listed in one refusal.
SHOWN_CLASSES = 10


def validation_split(
    labels: torch.Tensor, fraction: float, seed: int, *, class_names: Sequence[str] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and validation indices into the training set, each sorted ascending.

    Stratified by label, disjoint, together covering every index. ``class_names`` (in label
    order) only makes refusals easier to read. Raises :class:`UsageError` for a fraction
    outside (0, 1) or one that leaves a class without a training or validation sample.
    """
    labels = _checked_labels(labels)
    _check_fraction(fraction)
    counts = torch.bincount(labels)
    wanted = validation_counts(counts, fraction, class_names)
    # A random order of all samples, then grouped by class with a stable sort: within each
    # class the samples keep the random order, and its first `wanted` go to validation.
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    by_class = order[torch.sort(labels[order], stable=True).indices]
    grouped = labels[by_class]
    first_of_class = torch.cumsum(counts, 0) - counts
    place_in_class = torch.arange(len(labels)) - first_of_class[grouped]
    chosen = place_in_class < wanted[grouped]
    return by_class[~chosen].sort().values, by_class[chosen].sort().values


def validation_counts(counts: torch.Tensor, fraction: float, class_names: Sequence[str] = ()) -> torch.Tensor:
    """How many samples of each class go to validation (``counts[c]`` = samples of class ``c``).

    Raises :class:`UsageError` when some class would be left with no training or no
    validation sample, listing every such class.
    """
    # floor(x + 0.5) rounds halves up, the same on every platform (Python's round() would
    # round 2.5 to 2 and 3.5 to 4).
    wanted = torch.floor(counts.double() * fraction + 0.5).long().clamp_min(1)
    wanted = torch.where(counts > 0, wanted, torch.zeros_like(wanted))
    single = (counts == 1).nonzero().flatten().tolist()
    no_training = ((counts > 1) & (wanted >= counts)).nonzero().flatten().tolist()
    if single or no_training:
        _refuse(counts, fraction, single, no_training, class_names)
    return wanted


def _refuse(
    counts: torch.Tensor, fraction: float, single: list[int], no_training: list[int], names: Sequence[str]
) -> None:
    problems = [f"{_class(c, names)} has a single sample: it cannot be in both splits" for c in single]
    problems += [
        f"{_class(c, names)} has {int(counts[c])} samples: {fraction} of them rounds to all {int(counts[c])}, "
        "leaving none to train on"
        for c in no_training
    ]
    if len(problems) > SHOWN_CLASSES:
        problems = [*problems[:SHOWN_CLASSES], f"... and {len(problems) - SHOWN_CLASSES} more classes"]
    if no_training:
        smallest = int(counts[no_training].min())
        problems.append(f"fix: lower {SETTING} to at most {_floor3((smallest - 1) / smallest)}")
    if single:
        problems.append(
            "fix: give every class at least two samples, use a dataset that provides its own validation "
            f"split, or leave out {SETTING} (model selection then uses the test split)"
        )
    raise UsageError(
        f"{SETTING} = {fraction}: the stratified split cannot give every class a training and a validation sample",
        problems=problems,
    )


def _class(label: int, names: Sequence[str]) -> str:
    return f"class {label} ('{names[label]}')" if label < len(names) else f"class {label}"


def _floor3(value: float) -> str:
    """``value`` rounded down to 3 decimals: a suggested bound that is itself accepted."""
    return f"{int(value * 1000) / 1000:g}"


def _check_fraction(fraction: float) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise UsageError(
            f"{SETTING} must be a fraction between 0 and 1 (exclusive), such as 0.1, got {fraction!r}",
            problems=[
                f"leave out {SETTING} to train on the whole training set (model selection then uses the test split)"
            ],
        )


def _checked_labels(labels: Any) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-d integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}")
    labels = labels.long().cpu()
    if len(labels) and int(labels.min()) < 0:
        raise ValueError(f"labels must be class numbers 0, 1, ...; found {int(labels.min())}")
    return labels


def shard(indices: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s share of ``indices`` among ``world`` ranks: every ``world``-th, from ``rank``.

    The shares are disjoint and together hold every index exactly once; no padding, so
    sums over the shares equal the sum over the whole (ranks may differ by one sample).
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must be in 0..{world - 1} for a world of {world}, got rank {rank}")
    return indices[rank::world]


def dataset_labels(dataset: Any, tensors: Callable[[Any], tuple[Any, Any]] | None = None) -> torch.Tensor:
    """Every training label in dataset order, without transforming a sample where possible.

    Uses the dataset component's ``tensors`` when it has one (the same labels on both data
    paths), else a ``targets`` attribute (torchvision's datasets), else reads each sample.
    """
    if tensors is not None:
        return torch.as_tensor(tensors(dataset)[1]).long()
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets).long()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)
