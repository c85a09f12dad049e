"""Each plot writes a valid PNG, atomically, and refuses inputs it cannot draw."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from mlrun import plots
from mlrun.errors import UsageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def open_png(path: Path) -> Image.Image:
    """Check the file is a complete PNG and return it decoded (RGB)."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()  # checks the chunks' CRCs: a torn file fails here
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.convert("RGB")


def assert_drawn(image: Image.Image) -> None:
    """Not a blank page: many distinct colours."""
    assert len(image.getcolors(maxcolors=1 << 24)) > 50


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def metric_rows(count: int) -> list[dict[str, str]]:
    # As csv.DictReader gives them back from metrics.csv: strings.
    return [
        {"epoch": str(e), "train_loss": f"{1 / e:.4f}", "test_loss": f"{0.8 + 0.02 * e:.4f}",
         "test_accuracy": f"{0.7 + 0.03 * e:.4f}", "seconds": "1.0"}
        for e in range(1, count + 1)
    ]  # fmt: skip


@pytest.mark.parametrize("count", [1, 5])
def test_plot_metrics_writes_a_png(tmp_path: Path, count: int) -> None:
    path = tmp_path / "metrics.png"
    plots.plot_metrics(metric_rows(count), path)
    image = open_png(path)
    assert image.size == (1000, 400)
    assert_drawn(image)
    assert no_temp_files(tmp_path)


def test_plot_metrics_takes_numbers_too_and_replaces_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.png"
    path.write_bytes(b"old")
    rows = [{"epoch": 1, "train_loss": 0.5, "test_loss": 0.6, "test_accuracy": 0.8}]
    plots.plot_metrics(rows, path)
    open_png(path)


def test_plot_metrics_rejects_what_it_cannot_draw(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no metrics to plot"):
        plots.plot_metrics([], tmp_path / "a.png")
    with pytest.raises(UsageError, match="metrics row 1 has no 'test_loss' column"):
        plots.plot_metrics([{"epoch": 1, "train_loss": 0.5, "test_accuracy": 0.8}], tmp_path / "a.png")
    with pytest.raises(UsageError, match="metrics row 2: train_loss = 'nan!' is not a number"):
        plots.plot_metrics([*metric_rows(1), {**metric_rows(2)[1], "train_loss": "nan!"}], tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


@pytest.mark.parametrize("shape", [(1, 28, 28), (28, 28), (784,), (3, 28, 28)])
def test_plot_prediction_writes_a_png(tmp_path: Path, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    probabilities = torch.softmax(torch.randn(10), dim=0).tolist()
    path = tmp_path / "sub" / "index-3.png"  # the folder is created
    plots.plot_prediction(torch.randn(shape), probabilities, NAMES, path, title="test sample 3")
    image = open_png(path)
    assert image.width > image.height  # the image beside the bar chart
    assert_drawn(image)


def test_plot_prediction_checks_its_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 probabilities but 10 class names"):
        plots.plot_prediction(torch.zeros(28, 28), [0.2, 0.3, 0.5], NAMES, tmp_path / "a.png")
    with pytest.raises(ValueError, match="not a square"):
        plots.plot_prediction(torch.zeros(700), [0.1] * 10, NAMES, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_plot_confusion_matrix_writes_a_png(tmp_path: Path) -> None:
    matrix = torch.eye(10, dtype=torch.long) * 18 + torch.randint(0, 3, (10, 10))
    path = tmp_path / "confusion_matrix.png"
    plots.plot_confusion_matrix(matrix, NAMES, path)
    assert_drawn(open_png(path))
    with pytest.raises(ValueError, match="must be 10x10, got \\[3, 3\\]"):
        plots.plot_confusion_matrix(torch.zeros(3, 3), NAMES, tmp_path / "bad.png")


def test_plotting_needs_no_display_and_leaves_pyplot_alone(tmp_path: Path) -> None:
    # In a fresh interpreter without a display: drawing must not import pyplot (which would
    # pick or switch the process-wide backend of, say, a notebook using mlrun).
    script = (
        "import sys; from pathlib import Path; from mlrun import plots; "
        "plots.plot_confusion_matrix([[3, 1], [0, 4]], ['a', 'b'], Path('cm.png')); "
        "print('pyplot' if 'matplotlib.pyplot' in sys.modules else 'no pyplot')"
    )
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no pyplot"
    open_png(tmp_path / "cm.png")
