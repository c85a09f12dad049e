"""Evaluating a split while training: the loss and every metric, summed exactly across ranks.

Each rank evaluates its own, disjoint share of the split; the loss is added up as a sum
(not a mean) and each metric's states are summed (:func:`mlrun.metrics.compute_all`)
before any figure is computed, so a DDP run reports exactly what one process would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from mlrun.build import build_component
from mlrun.errors import MlrunError
from mlrun.metrics import Accumulator, Value, as_probabilities, compute_all, metric_labels

if TYPE_CHECKING:
    from mlrun.batches import Batch, BatchSource
    from mlrun.distributed import Group
    from mlrun.precision import Precision
    from mlrun.recipe import Recipe

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def evaluate_sums(
    model: torch.nn.Module,
    criterion: Criterion,
    loader: Iterable[Batch],
    device: torch.device,
    metrics: Mapping[str, tuple[Accumulator, bool]] | None = None,
    output_kind: str = "logits",
) -> tuple[float, int]:
    """Summed loss and sample count under ``torch.no_grad()`` in eval mode; ``metrics`` are updated.

    ``metrics`` maps a label to its accumulator and whether it needs probabilities
    (converted once per batch from ``output_kind``). Sums, not means: the shares of
    several ranks add up exactly.
    """
    metrics = metrics or {}
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with torch.no_grad():
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            output = model(inputs)
            total_loss += criterion(output, labels).double() * len(labels)
            count += len(labels)
            probabilities: torch.Tensor | None = None
            for accumulator, needs_probs in metrics.values():
                scores = output
                if needs_probs:
                    if probabilities is None:
                        probabilities = as_probabilities(output.float(), output_kind)
                    scores = probabilities
                accumulator.update(scores, labels)
    model.train()
    return float(total_loss), count


def evaluate(
    model: torch.nn.Module, criterion: Criterion, loader: Iterable[Batch], device: torch.device
) -> tuple[float, float]:
    """Mean loss and accuracy of a loader's batches, under ``torch.no_grad()`` with the model in eval mode."""
    from mlrun.builtins.metrics import Correct

    correct = Correct()
    loss_sum, count = evaluate_sums(model, criterion, loader, device, {"accuracy": (correct, False)})
    if count == 0:
        raise MlrunError("the test split is empty: nothing to evaluate")
    return loss_sum / count, float(correct.compute(correct.state()))  # type: ignore[arg-type]


class Evaluator:
    """The recipe's metrics, built once, evaluated on one split at a time (every rank calls :meth:`run`)."""

    def __init__(self, recipe: Recipe, num_classes: int, group: Group | None = None) -> None:
        specs = recipe.metrics
        self.labels = metric_labels([(spec.component.name, spec.params) for spec in specs])
        self.metrics: dict[str, tuple[Accumulator, bool]] = {
            label: (build_component(spec, num_classes=num_classes), spec.component.needs == "probs")  # type: ignore[attr-defined]
            for label, spec in zip(self.labels, specs)
        }
        #: Labels of the figures that are one number (printed each epoch, written to metrics.csv).
        self.scalar = [label for label, spec in zip(self.labels, specs) if getattr(spec.component, "scalar", True)]
        self.output_kind = recipe.model.component.output_kind(recipe.model.params)  # type: ignore[attr-defined]
        self.group = group

    def run(
        self,
        model: torch.nn.Module,
        criterion: Criterion,
        source: BatchSource,
        indices: torch.Tensor,
        device: torch.device,
        precision: Precision,
        split: str,
    ) -> dict[str, Value]:
        """``loss`` and every metric of this rank's ``indices`` of a split, over all ranks."""
        for accumulator, _ in self.metrics.values():
            accumulator.reset()
        with precision.autocast():  # evaluated in the precision it trains in
            loss_sum, count = evaluate_sums(
                model, criterion, source.epoch(indices), device, self.metrics, self.output_kind
            )
        if self.group is not None:  # every rank saw part of the split: add the parts up
            loss_sum, total = self.group.sum(loss_sum, count)
            count = int(total)
        if count == 0:
            raise MlrunError(f"the {_SPLIT_WORDS.get(split, split)} split is empty: nothing to evaluate")
        collective = device if self.group is not None and self.group.backend == "nccl" else "cpu"
        accumulators = {label: accumulator for label, (accumulator, _) in self.metrics.items()}
        return {"loss": loss_sum / count, **compute_all(accumulators, self.group, collective)}

    def row(self, split: str, figures: Mapping[str, Value]) -> dict[str, Any]:
        """The scalar figures as metrics.csv columns: ``val_loss``, ``val_accuracy``, ..."""
        values: dict[str, Any] = {f"{split}_loss": round(float(figures["loss"]), 6)}  # type: ignore[arg-type]
        for label in self.scalar:
            values[f"{split}_{label}"] = round(float(figures[label]), 6)  # type: ignore[arg-type]
        return values


_SPLIT_WORDS = {"val": "validation"}
