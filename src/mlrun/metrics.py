"""The metric kind: evaluation figures that accumulate over batches and add up exactly across ranks.

A metric's factory returns an accumulator (:class:`Accumulator`): ``update(scores, labels)``
after every evaluation batch adds to tensors of **sums, counts or a confusion matrix**, never
to a mean. ``state()`` hands those tensors over; under DDP every rank's states are summed
(:func:`reduce_states`, one all-reduce for all metrics) and only then does ``compute(state)``
turn them into the figure. A sum of integer counts is the same whichever rank saw which
sample, so the reduced figure equals the single-process one exactly.

Nothing here imports torch at import time: ``import mlrun`` (which every plugin does) stays
light. Evaluation runs whole between two checkpoints, so accumulators need no checkpoint
state: the engine calls ``reset()`` before each evaluation.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mlrun.components import NEEDS, Metric
from mlrun.errors import did_you_mean

if TYPE_CHECKING:
    import torch

    from mlrun.distributed import Group

#: A computed figure: a number, one value per class (None where a class has no samples:
#: JSON holds no NaN), or a matrix of counts.
Value = float | list[float | None] | list[list[int]]

#: Names a metric may not take: the loss is recorded beside the metrics (``val_loss``).
RESERVED_NAMES = frozenset({"loss"})


class Accumulator(Protocol):
    """What a metric factory returns: additive states, then a figure computed from them."""

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch: ``scores`` is ``N x C`` (what ``needs`` asked for), ``labels`` is ``N``.

        Called once per evaluation batch: keep it to tensor operations on the scores' device
        (no ``.item()``, which would wait for the GPU).
        """

    def state(self) -> dict[str, torch.Tensor]:
        """The accumulated tensors; each is summed element-wise across ranks before :meth:`compute`."""

    def compute(self, state: Mapping[str, torch.Tensor]) -> Value:
        """The figure, from a (possibly reduced) :meth:`state`."""

    def reset(self) -> None:
        """Forget every batch: called before each evaluation."""


def mode_of(metric: Metric) -> Literal["max", "min"]:
    """The monitoring mode a metric implies: ``max`` when higher is better."""
    return "max" if metric.higher_is_better else "min"


def metric_problems(component: Any, params: Mapping[str, Any]) -> list[str]:
    """What is wrong with a metric descriptor's own fields (for :mod:`mlrun.descriptor_checks`)."""
    problems = [
        f"{field} must be True or False, got {getattr(component, field)!r:.60}"
        for field in ("higher_is_better", "scalar")
        if not isinstance(getattr(component, field), bool)
    ]
    needs = component.needs
    if needs not in NEEDS:
        problems.append(
            f"needs must be 'scores' (argmax metrics: any class scores) or 'probs' (probabilities), "
            f"got {needs!r:.60}{did_you_mean(str(needs), NEEDS)}"
        )
    if component.name in RESERVED_NAMES:
        problems.append(f"the name '{component.name}' is taken by the loss column (val_loss): choose another")
    return problems


def as_probabilities(output: torch.Tensor, output_kind: str) -> torch.Tensor:
    """Class probabilities from a model output of the given kind (logits, log_probs or probs)."""
    if output_kind == "probs":
        return output
    if output_kind == "log_probs":
        return output.exp()
    if output_kind == "logits":
        return output.softmax(dim=-1)
    raise ValueError(f"unknown model output kind {output_kind!r}: expected 'logits', 'log_probs' or 'probs'")


def metric_labels(entries: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Column labels for a recipe's metrics: the name, plus its parameters when the name repeats.

    ``[("accuracy", {}), ("top_k_accuracy", {"k": 1}), ("top_k_accuracy", {"k": 5})]`` gives
    ``accuracy``, ``top_k_accuracy_k1``, ``top_k_accuracy_k5``. Two identical entries give the
    same label: the caller refuses duplicates.
    """
    repeated = Counter(name for name, _ in entries)
    return [
        name if repeated[name] == 1 else name + "".join(f"_{key}{params[key]}" for key in sorted(params))
        for name, params in entries
    ]


def reduce_states(
    accumulators: Sequence[Accumulator], group: Group | None, device: Any = "cpu"
) -> list[dict[str, torch.Tensor]]:
    """Every accumulator's state, summed over all ranks (unchanged for a single process).

    All states travel in one float64 tensor (one all-reduce for all metrics): integer counts
    stay exact up to 2**53. Every rank must pass the same metrics, with states of the same
    shapes: sizes come from the factory (``num_classes``), never from the data a rank saw.
    ``device`` is where the collective runs: CUDA for nccl, CPU for gloo.
    """
    import torch

    states = [accumulator.state() for accumulator in accumulators]
    if group is None or group.world_size == 1:
        return states
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("reduce_states was given a distributed group but torch.distributed is not initialised")
    parts = [tensor.detach().reshape(-1).to(device, torch.float64) for state in states for tensor in state.values()]
    if not parts:
        return states
    flat = torch.cat(parts)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    reduced, start = [], 0
    for state in states:
        summed = {}
        for key, tensor in state.items():
            size = tensor.numel()
            summed[key] = flat[start : start + size].reshape(tensor.shape).to(tensor.device, tensor.dtype)
            start += size
        reduced.append(summed)
    return reduced


def compute_all(
    accumulators: Mapping[str, Accumulator], group: Group | None = None, device: Any = "cpu"
) -> dict[str, Value]:
    """Each named accumulator's figure, from its states summed over all ranks."""
    names = list(accumulators)
    states = reduce_states([accumulators[name] for name in names], group, device)
    return {name: accumulators[name].compute(state) for name, state in zip(names, states)}


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when there is nothing to divide (an empty split)."""
    return numerator / denominator if denominator else math.nan
