"""Evaluate a finished run on its test split: loss, accuracy, per-class accuracy, confusion matrix.

The run is rebuilt as :mod:`mlrun.predict` rebuilds it (recipe.toml, model.pt loaded
with ``weights_only=True``); nothing from the training loop is needed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mlrun.build import build_component
from mlrun.errors import UsageError
from mlrun.files import atomic_write_text
from mlrun.predict import LoadedRun, load_run, test_split
from mlrun.registry import Registry

Echo = Callable[[str], None]

CONFUSION_MATRIX_FILE = "confusion_matrix.png"
EVALUATION_FILE = "evaluation.json"


def evaluate(run_dir: Path, *, registry: Registry, echo: Echo = print, weights: str | None = None) -> dict[str, Any]:
    """Test loss, accuracy, per-class accuracy and confusion matrix of a finished run.

    Writes ``confusion_matrix.png`` and ``evaluation.json`` into the run folder. Uses
    the recipe's test split, evaluation transforms, criterion and
    ``train.eval_batch_size``, so the accuracy is the one training reported last.
    ``weights``: ``best`` (best.pt) or ``final`` (model.pt); None takes best.pt when present.
    """
    from mlrun import plots

    loaded = load_run(Path(run_dir), registry, weights)
    loss_sum, truth, guess, num_outputs = _predict_test_split(loaded)
    count = len(truth)
    num_classes = max(num_outputs, int(truth.max()) + 1)
    # Row = true class, column = predicted class.
    matrix = torch.bincount(truth * num_classes + guess, minlength=num_classes**2).reshape(num_classes, num_classes)
    names = loaded.names_for(num_classes)
    correct = int(matrix.diagonal().sum())
    run_dir = loaded.run_dir
    result: dict[str, Any] = {
        "run": str(run_dir),
        "weights": loaded.weights.name,
        "samples": count,
        "test_loss": loss_sum / count,
        "test_accuracy": correct / count,
        "per_class": _per_class(matrix, names),
        "confusion_matrix": matrix.tolist(),
        "class_names": names,
        "confusion_matrix_png": str(run_dir / CONFUSION_MATRIX_FILE),
    }
    plots.plot_confusion_matrix(matrix, names, run_dir / CONFUSION_MATRIX_FILE)
    atomic_write_text(run_dir / EVALUATION_FILE, json.dumps(result, indent=2) + "\n")
    _report(result, names, echo)
    return result


def _predict_test_split(loaded: LoadedRun) -> tuple[float, torch.Tensor, torch.Tensor, int]:
    """Summed test loss, true and predicted classes of every test sample, and the model's output width."""
    recipe = loaded.recipe
    test_set = test_split(loaded)
    if len(test_set) == 0:
        raise UsageError(f"dataset '{recipe.dataset.component.name}' has an empty test split: nothing to evaluate")
    criterion = build_component(recipe.criterion)
    if isinstance(criterion, torch.nn.Module):
        criterion = criterion.to(loaded.device)
    # A plain DataLoader over the per-sample transforms: the reference definition of the
    # recipe's evaluation data (the engine's in-memory path is checked to give the same).
    loader = DataLoader(
        test_set, batch_size=recipe.train.eval_batch_size, shuffle=False,
        num_workers=recipe.train.num_workers,
    )  # fmt: skip
    total_loss = torch.zeros((), dtype=torch.float64)
    labels_seen: list[torch.Tensor] = []
    predicted: list[torch.Tensor] = []
    num_outputs = 0
    loaded.model.eval()
    with torch.no_grad():
        for inputs, labels in loader:
            inputs, labels = inputs.to(loaded.device), labels.to(loaded.device)
            output = loaded.model(inputs)
            # The criterion gives the batch mean; weighting by batch size gives the sample mean.
            total_loss += float(criterion(output, labels)) * len(labels)
            num_outputs = output.shape[-1]
            labels_seen.append(labels.to("cpu", torch.long))
            predicted.append(output.argmax(dim=-1).to("cpu"))
    return float(total_loss), torch.cat(labels_seen), torch.cat(predicted), num_outputs


def _per_class(matrix: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
    """Samples and accuracy of each true class (a row of the confusion matrix)."""
    per_class_samples = matrix.sum(dim=1)
    return [
        {
            "class": i,
            "name": names[i],
            "samples": int(per_class_samples[i]),
            # A class absent from the test split has no accuracy (JSON cannot hold NaN).
            "accuracy": float(matrix[i, i]) / int(per_class_samples[i]) if per_class_samples[i] else None,
        }
        for i in range(len(names))
    ]


def _report(result: dict[str, Any], names: list[str], echo: Echo) -> None:
    run_dir = Path(result["run"])
    echo(
        f"{run_dir}: test_loss {result['test_loss']:.4f}  test_accuracy {result['test_accuracy']:.4f}  "
        f"({result['samples']} test samples, weights {result['weights']})"
    )
    width = max(len(n) for n in names)
    for row in result["per_class"]:
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
        echo(f"  {row['name'].ljust(width)}  {accuracy}  ({row['samples']} samples)")
    echo(f"wrote {run_dir / CONFUSION_MATRIX_FILE} and {run_dir / EVALUATION_FILE}")
