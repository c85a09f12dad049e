"""Pictures of a run: its learning curves, single predictions and the confusion matrix.

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure``)
and rendered by the Agg canvas, never through ``pyplot``: nothing needs a
display, no global backend is switched under the caller (a notebook importing
this module keeps its own), and no figure is kept alive by pyplot's figure
manager. Every PNG is written atomically (see :func:`mlrun.runs.atomic_write`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mlrun.errors import MlrunError, UsageError
from mlrun.files import atomic_write

#: The columns of metrics.csv that :func:`plot_metrics` draws.
METRIC_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "test_loss", "test_accuracy")


def _new_figure(width: float, height: float) -> Figure:
    """A figure attached to an Agg canvas, independent of pyplot and of the selected backend."""
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> None:
    """Write the figure as a PNG, atomically; a failure names the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MlrunError(f"could not create the folder {path.parent}: {exc.strerror or exc}") from exc
    try:
        atomic_write(path, lambda out: figure.savefig(out, format="png"))
    except OSError as exc:  # atomic_write creates its temporary file outside its own error handling
        raise MlrunError(f"could not write {path}: {exc.strerror or exc}") from exc


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """One metric as floats; rows read back from metrics.csv hold strings."""
    values = []
    for number, row in enumerate(rows, start=1):
        if key not in row:
            raise UsageError(
                f"metrics row {number} has no '{key}' column; "
                f"expected the metrics.csv columns {', '.join(METRIC_COLUMNS)}"
            )
        try:
            values.append(float(row[key]))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"metrics row {number}: {key} = {row[key]!r} is not a number") from exc
    return values


def plot_metrics(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Training vs test (or validation) loss (left) and accuracy (right) per epoch, saved as a PNG.

    The classic overfitting picture: the training loss keeps falling while the test
    loss turns back up. ``rows`` are metrics.csv rows (numbers or numeric strings).
    """
    if not rows:
        raise UsageError(f"no metrics to plot for {path}: the run has not finished an epoch yet")
    # With a validation split the epochs were evaluated on it (val_loss, ...), else on the test split.
    split = "val" if "val_loss" in rows[0] else "test"
    word = {"val": "validation"}.get(split, split)
    figures = [key for key in rows[0] if key.startswith(f"{split}_") and key != f"{split}_loss"]
    metric = f"{split}_accuracy" if f"{split}_accuracy" in rows[0] or not figures else figures[0]
    epochs = _column(rows, "epoch")
    train_loss, test_loss = _column(rows, "train_loss"), _column(rows, f"{split}_loss")
    accuracy = _column(rows, metric)
    metric_words = metric.split("_", 1)[1].replace("_", " ")

    figure = _new_figure(10, 4)
    loss_axes, accuracy_axes = figure.subplots(ncols=2)
    # Markers keep a single epoch visible: a one-point line draws nothing.
    loss_axes.plot(epochs, train_loss, marker="o", label="training loss")
    loss_axes.plot(epochs, test_loss, marker="o", label=f"{word} loss")
    loss_axes.set_title("Loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("loss")
    loss_axes.legend()

    accuracy_axes.plot(epochs, accuracy, marker="o", color="tab:green", label=f"{word} {metric_words}")
    accuracy_axes.set_title(f"{word.capitalize()} {metric_words}")
    accuracy_axes.set_xlabel("epoch")
    accuracy_axes.set_ylabel(metric_words)
    accuracy_axes.legend(loc="lower right")
    for axes in (loss_axes, accuracy_axes):
        if len(epochs) <= 12:
            axes.set_xticks(epochs, labels=[f"{e:g}" for e in epochs])  # one tick per epoch
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        if len(epochs) == 1:
            # A lone point would get a hair-thin axis with fractional ticks around it.
            axes.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    _save(figure, path)


def _to_numpy(values: Any) -> np.ndarray:
    """A tensor (any device, with or without grad), array or nested list as a NumPy array."""
    if hasattr(values, "detach"):  # a torch tensor; torch itself is not imported here (slow)
        values = values.detach().to("cpu").numpy()
    return np.asarray(values)


def _displayable(image: Any) -> np.ndarray:
    """An image as H x W (grayscale) or H x W x 3, scaled to [0, 1] for display.

    Accepts what a model receives: 1 x H x W, H x W, 3 x H x W, or a flattened
    square image (784 -> 28 x 28, after a ``flatten`` transform).
    """
    original = _to_numpy(image).astype(np.float64)
    picture = original
    while picture.ndim > 2 and picture.shape[0] == 1:
        picture = picture[0]
    if picture.ndim == 1:
        side = math.isqrt(picture.size)
        if side * side != picture.size:
            raise ValueError(f"cannot show a flat image of {picture.size} values: not a square")
        picture = picture.reshape(side, side)
    elif picture.ndim == 3 and picture.shape[0] == 3:
        picture = picture.transpose(1, 2, 0)  # channels last, as imshow wants
    elif picture.ndim != 2:
        raise ValueError(f"cannot show an image of shape {list(original.shape)}")
    if picture.min() >= 0 and picture.max() <= 1:
        return picture  # pixel values before normalisation: shown as they are, in their true colours
    # Model inputs are usually normalized (e.g. to [-1, 1]): rescale so the picture
    # shows what the model saw, with full contrast, whatever the normalization.
    low, high = float(picture.min()), float(picture.max())
    return (picture - low) / (high - low) if high > low else np.zeros_like(picture)


def plot_prediction(
    image: Any,
    probabilities: Sequence[float],
    class_names: Sequence[str],
    path: Path,
    title: str = "",
) -> None:
    """The classic ``view_classify``: the image beside a horizontal bar chart of class probabilities.

    ``image`` is the model input (a tensor or array: 1 x H x W, H x W, 3 x H x W or a
    flattened square image); values in [0, 1] are shown as they are, others rescaled to full contrast.
    """
    probs = [float(p) for p in probabilities]
    if len(probs) != len(class_names):
        raise ValueError(f"{len(probs)} probabilities but {len(class_names)} class names")
    picture = _displayable(image)

    height = max(3.5, 0.3 * len(probs) + 1.0)
    figure = _new_figure(8, height)
    image_axes, bar_axes = figure.subplots(ncols=2, width_ratios=[1, 1.4])
    image_axes.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
    # No ticks, but keep the frame: bright image borders would vanish into the white page.
    image_axes.set_xticks([])
    image_axes.set_yticks([])

    positions = list(range(len(probs)))
    best = max(positions, key=probs.__getitem__)
    colors = ["tab:orange" if i == best else "tab:blue" for i in positions]
    bars = bar_axes.barh(positions, probs, color=colors)
    # Labels are set with the bar positions, so each name sits on its own bar.
    bar_axes.set_yticks(positions, labels=list(class_names))
    bar_axes.invert_yaxis()  # class 0 at the top, reading order
    bar_axes.set_xlim(0, 1.15)  # room for the value labels
    bar_axes.bar_label(bars, labels=[f"{p:.2f}" for p in probs], padding=2, fontsize="small")
    bar_axes.set_xlabel("probability")
    bar_axes.set_title("Class probability")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    _save(figure, path)


def plot_confusion_matrix(matrix: Any, class_names: Sequence[str], path: Path) -> None:
    """Counts of true (rows) vs predicted (columns) classes as an annotated heat map.

    ``matrix`` is a square tensor, array or nested list, one row and column per class name.
    """
    counts = _to_numpy(matrix)
    size = len(class_names)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != size:
        raise ValueError(f"a confusion matrix for {size} classes must be {size}x{size}, got {list(counts.shape)}")

    side = max(5.0, 0.55 * size + 2.5)
    figure = _new_figure(side + 1.0, side)
    axes = figure.subplots()
    shown = axes.imshow(counts, cmap="Blues", interpolation="nearest")
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="samples")
    positions = list(range(size))
    axes.set_xticks(positions, labels=list(class_names), rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(positions, labels=list(class_names))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Confusion matrix")
    if size <= 30:  # beyond that the numbers no longer fit in their cells
        threshold = float(counts.max()) / 2 if counts.size else 0.0
        for row in positions:
            for col in positions:
                value = int(counts[row, col])
                axes.text(
                    col, row, str(value), ha="center", va="center", fontsize="small",
                    color="white" if value > threshold else "black",
                )  # fmt: skip
    figure.tight_layout()
    _save(figure, path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlrun.plots RUN_DIR``: draw RUN_DIR/metrics.png from RUN_DIR/metrics.csv."""
    import csv
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m mlrun.plots RUN_DIR", file=sys.stderr)
        return 2
    folder = Path(args[0])
    with (folder / "metrics.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    plot_metrics(rows, folder / "metrics.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
