"""The validation split: seeded, stratified, disjoint, complete; refusals with the fix; rank shards."""

from __future__ import annotations

import math

import pytest
import torch

from mlrun.errors import UsageError
from mlrun.splits import dataset_labels, shard, validation_split


def labels(counts: list[int], seed: int = 0) -> torch.Tensor:
    """Classes 0, 1, ... with the given counts, in a shuffled order."""
    grouped = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return grouped[torch.randperm(len(grouped), generator=torch.Generator().manual_seed(seed))]


COUNTS = [50, 30, 7, 2, 0, 11]  # class 4 has no samples at all


def test_the_split_is_stratified_disjoint_and_complete() -> None:
    y = labels(COUNTS)
    train, val = validation_split(y, 0.1, seed=1)
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(len(y)))  # all, once
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    # round(0.1 x count), halves up, at least 1: 5, 3, 1 (0.7), 1 (0.2 -> at least one), 0, 1 (1.1)
    assert torch.bincount(y[val], minlength=len(COUNTS)).tolist() == [5, 3, 1, 1, 0, 1]
    assert torch.bincount(y[train], minlength=len(COUNTS)).tolist() == [45, 27, 6, 1, 0, 10]


def test_halves_round_up() -> None:
    train, val = validation_split(labels([5, 15]), 0.3, seed=0)  # 1.5 -> 2, 4.5 -> 5
    assert len(val) == 7 and len(train) == 13


def test_the_same_seed_gives_the_same_split_and_another_seed_another() -> None:
    y = labels(COUNTS)
    first, again = validation_split(y, 0.2, seed=7), validation_split(y.clone(), 0.2, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other = validation_split(y, 0.2, seed=8)
    assert not torch.equal(first[1], other[1])
    assert torch.equal(torch.bincount(y[first[1]]), torch.bincount(y[other[1]]))  # still stratified


def test_the_split_ignores_the_label_dtype_and_the_global_generator() -> None:
    y = labels(COUNTS)
    expected = validation_split(y, 0.2, seed=3)
    torch.manual_seed(12345)  # the split has a generator of its own
    for same in (y.int(), y.tolist()):
        assert all(torch.equal(a, b) for a, b in zip(expected, validation_split(same, 0.2, seed=3)))


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, -0.1, 1.5, math.nan, True])
def test_a_fraction_outside_zero_and_one_is_refused(fraction) -> None:
    with pytest.raises(UsageError, match=r"train.val_fraction must be a fraction between 0 and 1") as caught:
        validation_split(labels([10, 10]), fraction, seed=0)
    assert "leave out train.val_fraction" in caught.value.render()


def test_a_class_with_a_single_sample_is_named_with_the_fix() -> None:
    with pytest.raises(UsageError) as caught:
        validation_split(labels([10, 1, 5]), 0.2, seed=0, class_names=("cat", "dog", "bird"))
    text = caught.value.render()
    assert "train.val_fraction = 0.2: the stratified split cannot give every class" in text
    assert "class 1 ('dog') has a single sample: it cannot be in both splits" in text
    assert "fix: give every class at least two samples, use a dataset that provides its own validation split" in text


def test_a_fraction_leaving_a_class_nothing_to_train_on_is_refused_with_a_bound_that_works() -> None:
    y = labels([20, 3, 3])
    with pytest.raises(UsageError) as caught:
        validation_split(y, 0.9, seed=0)
    problems = caught.value.problems
    assert "class 1 has 3 samples: 0.9 of them rounds to all 3, leaving none to train on" in problems
    assert "class 2 has 3 samples: 0.9 of them rounds to all 3, leaving none to train on" in problems
    assert problems[-1] == "fix: lower train.val_fraction to at most 0.666"
    train, val = validation_split(y, 0.666, seed=0)  # the suggested bound is accepted
    assert torch.bincount(y[train]).min() == 1


def test_many_refused_classes_are_summarised() -> None:
    with pytest.raises(UsageError) as caught:
        validation_split(torch.arange(30), 0.5, seed=0)
    assert "... and 20 more classes" in caught.value.problems


def test_labels_must_be_class_numbers() -> None:
    with pytest.raises(ValueError, match="1-d integer tensor"):
        validation_split(torch.rand(10), 0.1, seed=0)
    with pytest.raises(ValueError, match="found -1"):
        validation_split(torch.tensor([0, 1, -1]), 0.1, seed=0)


# ---------------------------------------------------------------- rank shards


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("size", [0, 1, 4, 17])
def test_shards_are_disjoint_and_cover_every_index_once(world: int, size: int) -> None:
    indices = torch.randperm(100)[:size]
    parts = [shard(indices, rank, world) for rank in range(world)]
    assert sorted(torch.cat(parts).tolist()) == sorted(indices.tolist())  # no padding duplicates
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_rank_outside_the_world_is_refused() -> None:
    with pytest.raises(ValueError, match=r"rank must be in 0..1 for a world of 2, got rank 2"):
        shard(torch.arange(4), 2, 2)


# ---------------------------------------------------------------- the labels to split


class Targets:
    def __init__(self, y: torch.Tensor) -> None:
        self.targets = y

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[object, int]:
        return object(), int(self.targets[i])


class Plain:
    def __init__(self, y: torch.Tensor) -> None:
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[object, int]:
        return object(), int(self.y[i])


def test_the_labels_are_the_same_however_they_are_read() -> None:
    y = labels([6, 4])
    via_tensors = dataset_labels(Targets(y), tensors=lambda d: (None, d.targets))
    for found in (via_tensors, dataset_labels(Targets(y)), dataset_labels(Plain(y))):
        assert found.dtype == torch.long and torch.equal(found, y)
