"""Built-in metrics, hand-written on counts and confusion matrices (exact under DDP).

Every one accumulates integer tensors on the scores' device: ``accuracy`` and
``top_k_accuracy`` two counts, the others a ``C x C`` confusion matrix (row = true class,
column = predicted class). Predictions are ``argmax`` of the scores (the first class on a
tie, as ``torch.argmax``; ``top_k_accuracy`` breaks ties the same way), so any output kind serves.

Conventions for classes with no samples, chosen to match scikit-learn's defaults:

- ``macro_f1`` averages the F1 of every class that occurs in the labels **or** the
  predictions (``f1_score(average="macro")``); a class in neither is left out, a class
  never predicted counts with F1 = 0.
- ``balanced_accuracy`` averages the recall of every class that occurs in the labels
  (``balanced_accuracy_score``); a class only predicted, never true, is left out.
- ``per_class_accuracy`` gives None for a class with no samples.
- An empty evaluation gives NaN for the scalar figures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated

import torch
from annotated_types import Ge

from mlrun import Metric, hookimpl
from mlrun.metrics import Value, ratio

Matrix = torch.Tensor


class Correct:
    """Counts samples whose true class is among the ``k`` highest scores (k = 1: accuracy)."""

    def __init__(self, k: int = 1) -> None:
        self.k = k
        self.reset()

    def reset(self) -> None:
        """Zero the counts (on the CPU until the first batch says which device)."""
        self.correct = torch.zeros((), dtype=torch.long)
        self.total = 0  # known on the host from the batch's shape: no kernel needed to count it

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Add the batch's hits and size, without waiting for the device."""
        if self.correct.device != scores.device:
            self.correct = self.correct.to(scores.device)
        if self.k == 1:
            hits = scores.argmax(dim=-1) == labels
        else:
            hits = _classes_ahead(scores, labels) < self.k
        self.correct += hits.sum()
        self.total += labels.numel()

    def state(self) -> dict[str, torch.Tensor]:
        """Hits and samples."""
        return {"correct": self.correct, "total": torch.tensor(self.total, device=self.correct.device)}

    def compute(self, state: Mapping[str, torch.Tensor]) -> Value:
        """Hits / samples."""
        return ratio(int(state["correct"]), int(state["total"]))


def _classes_ahead(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How many classes rank above the true class: a higher score, or an equal one and a lower index.

    Ties are broken as ``argmax`` breaks them (the first class wins), so k = 1 gives
    ``accuracy`` exactly, on every device; ``torch.topk`` breaks ties its own way (and
    is ~3x slower on 1000-sample batches).
    """
    true_class = labels.unsqueeze(-1)
    true_score = scores.gather(-1, true_class)
    columns = torch.arange(scores.shape[-1], device=scores.device)
    tied_before = (scores == true_score).logical_and_(columns < true_class)
    return (scores > true_score).logical_or_(tied_before).sum(dim=-1)


class Confusion:
    """Accumulates the confusion matrix; ``finish`` turns the summed matrix into the figure."""

    def __init__(self, num_classes: int, finish: Callable[[Matrix], Value]) -> None:
        self.num_classes = num_classes
        self.finish = finish
        self.reset()

    def reset(self) -> None:
        """An all-zero matrix (moved to the scores' device by the first batch)."""
        self.counts = torch.zeros(self.num_classes * self.num_classes, dtype=torch.long)

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Count each (true, predicted) pair; labels lie in [0, num_classes) (the criterion checked)."""
        if self.counts.device != scores.device:
            self.counts = self.counts.to(scores.device)
        cells = labels * self.num_classes + scores.argmax(dim=-1)
        # index_add_ needs no host round trip (bincount must learn its output size first).
        self.counts.index_add_(0, cells, torch.ones_like(cells))

    def state(self) -> dict[str, torch.Tensor]:
        """The matrix, flattened row by row."""
        return {"matrix": self.counts}

    def compute(self, state: Mapping[str, torch.Tensor]) -> Value:
        """The figure of the summed matrix."""
        return self.finish(state["matrix"].reshape(self.num_classes, self.num_classes).cpu())


def _recalls(matrix: Matrix) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class's recall (correct / true samples) as float64, and which classes have samples."""
    true = matrix.sum(dim=1)
    present = true > 0
    return matrix.diagonal().double() / true.clamp_min(1).double(), present


def _per_class_accuracy(matrix: Matrix) -> Value:
    recall, present = _recalls(matrix)
    return [float(r) if p else None for r, p in zip(recall.tolist(), present.tolist())]


def _balanced_accuracy(matrix: Matrix) -> Value:
    recall, present = _recalls(matrix)
    return float(recall[present].mean()) if bool(present.any()) else float("nan")


def _macro_f1(matrix: Matrix) -> Value:
    true_positive = matrix.diagonal().double()
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (true samples + predicted samples).
    denominator = (matrix.sum(dim=1) + matrix.sum(dim=0)).double()
    seen = denominator > 0  # the class occurs in the labels or the predictions
    if not bool(seen.any()):
        return float("nan")
    return float((2 * true_positive[seen] / denominator[seen]).mean())


def _matrix(matrix: Matrix) -> Value:
    return matrix.tolist()


def accuracy() -> Correct:
    """Fraction of samples whose highest score is the true class."""
    return Correct()


def top_k_accuracy(*, num_classes: int, k: Annotated[int, Ge(1)] = 5) -> Correct:
    """Fraction of samples whose true class is among the ``k`` highest scores."""
    if k > num_classes:
        raise ValueError(f"k = {k} is more than the model's {num_classes} classes: choose k <= {num_classes}")
    return Correct(k)


def macro_f1(*, num_classes: int) -> Confusion:
    """Mean F1 over the classes that occur in the labels or the predictions."""
    return Confusion(num_classes, _macro_f1)


def balanced_accuracy(*, num_classes: int) -> Confusion:
    """Mean recall over the classes that occur in the labels."""
    return Confusion(num_classes, _balanced_accuracy)


def per_class_accuracy(*, num_classes: int) -> Confusion:
    """Recall of each class (None for a class with no samples)."""
    return Confusion(num_classes, _per_class_accuracy)


def confusion_matrix(*, num_classes: int) -> Confusion:
    """Sample counts: row = true class, column = predicted class."""
    return Confusion(num_classes, _matrix)


@hookimpl
def register_metrics() -> list[Metric]:
    """Accuracy, top-k accuracy, macro F1, balanced accuracy, per-class accuracy and the confusion matrix."""
    return [
        Metric("accuracy", accuracy, "fraction of samples whose top score is the true class"),
        Metric("top_k_accuracy", top_k_accuracy, "fraction of samples whose true class is in the k top scores"),
        Metric("macro_f1", macro_f1, "mean F1 over the classes in the labels or predictions"),
        Metric("balanced_accuracy", balanced_accuracy, "mean recall over the classes in the labels"),
        Metric("per_class_accuracy", per_class_accuracy, "recall of each class (stored, not printed)", scalar=False),
        Metric("confusion_matrix", confusion_matrix, "counts of true x predicted class (stored, not printed)", scalar=False),
    ]  # fmt: skip
