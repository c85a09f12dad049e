"""Predicting and evaluating with a finished run: probabilities, PNGs, and refusing bad weights."""

from __future__ import annotations

import csv
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from mlrun import engine, evaluation, predict
from mlrun.builtins.datasets import FASHION_MNIST_CLASSES
from mlrun.errors import UsageError
from mlrun.recipe import load_recipe

from conftest import QUIET, SMALL_RECIPE, write_recipe

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: One 1-epoch run per kind of model output; batch size 100 keeps each well under a second.
VARIANTS = {
    "log_probs": ["train.epochs=1", "train.batch_size=100"],  # classifier + nll (the Summary)
    "logits": ["train.epochs=1", "train.batch_size=100", "model.name=sequential", "criterion.name=cross_entropy"],
    "probs": ["train.epochs=1", "train.batch_size=100", "model.name=network_alternative", "criterion.name=nll_probs"],
    # A smaller learning rate leaves the model imperfect, so accuracy comparisons mean something.
    "imperfect": ["train.epochs=1", "train.batch_size=100", "optimizer.lr=0.001"],
}


@pytest.fixture(scope="module")
def trained(registry, idx_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Train each variant once per module (on first use); tests copy a run before damaging it."""
    base = tmp_path_factory.mktemp("predict-runs")
    recipe_path = write_recipe(base / "small.toml", SMALL_RECIPE.format(root=idx_root))
    folders: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in folders:
            overrides = [*VARIANTS[variant], f"train.output_dir={base / 'runs'}", f"train.run_name={variant}"]
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("MLRUN_OFFLINE", "1")
                result = engine.run(load_recipe(recipe_path, registry, overrides), **QUIET)
            folders[variant] = result.folder.path
        return folders[variant]

    return get


def copy_run(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100


def stored_test_image(idx_root: Path, index: int) -> Image.Image:
    """A test-split image exactly as stored in the generated IDX files."""
    from torchvision import datasets

    data = datasets.FashionMNIST(str(idx_root), train=False, download=False).data
    return Image.fromarray(data[index].numpy(), mode="L")


def test_predict_by_index_prints_top_k_and_writes_pngs(registry, trained, tmp_path: Path) -> None:
    run_dir = copy_run(trained("imperfect"), tmp_path)
    lines: list[str] = []
    results = predict.predict(run_dir, [], [12, 0], top_k=10, registry=registry, echo=lines.append)
    assert [r.source for r in results] == ["test sample 12", "test sample 0"]
    assert [r.png for r in results] == [
        run_dir / "predictions" / "index-12.png",
        run_dir / "predictions" / "index-0.png",
    ]
    for result in results:
        assert len(result.probabilities) == 10
        assert abs(sum(result.probabilities) - 1) < 1e-5
        assert all(0 <= p <= 1 for p in result.probabilities)
        assert [p for _, _, p in result.top] == sorted(result.probabilities, reverse=True)
        assert [name for _, name, _ in result.top] == [FASHION_MNIST_CLASSES[i] for i, _, _ in result.top]
        assert isinstance(result.label, int) and 0 <= result.label < 10
        assert_png(result.png)
    # The printed block of each sample lists all 10 classes; printed to 4 decimals they sum to ~1.
    text = "\n".join(lines)
    assert "test sample 12 (true class: " in text
    printed = [float(v) for v in re.findall(r"^\s+\d+\. .+?\s+(\d\.\d{4})$", text, flags=re.M)]
    assert len(printed) == 20
    assert abs(sum(printed[:10]) - 1) < 10 * 0.5e-4 and abs(sum(printed[10:]) - 1) < 10 * 0.5e-4


def test_predict_on_a_png_matches_the_same_test_sample(registry, trained, idx_root: Path, tmp_path: Path) -> None:
    run_dir = copy_run(trained("imperfect"), tmp_path)
    image_path = tmp_path / "shoe.png"
    stored_test_image(idx_root, 7).save(image_path)
    out_dir = tmp_path / "out"
    from_file, from_index = predict.predict(
        run_dir, [image_path], [7], top_k=3, out_dir=out_dir, registry=registry, echo=lambda line: None
    )
    assert from_file.png == out_dir / "shoe.png" and from_index.png == out_dir / "index-7.png"
    assert_png(from_file.png)
    assert len(from_file.top) == 3 and from_file.label is None
    # Same pixels, same evaluation transforms, same model: the same answer.
    assert torch.allclose(torch.tensor(from_file.probabilities), torch.tensor(from_index.probabilities), atol=1e-6)
    assert not (run_dir / "predictions").exists()  # out_dir was used instead


def test_predict_resizes_colour_jpegs_and_keeps_names_apart(registry, trained, idx_root: Path, tmp_path: Path) -> None:
    run_dir = copy_run(trained("log_probs"), tmp_path)
    big = stored_test_image(idx_root, 3).resize((84, 84)).convert("RGB")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    big.save(tmp_path / "a" / "item.jpg", format="JPEG")
    big.save(tmp_path / "b" / "item.png")
    results = predict.predict(
        run_dir,
        [tmp_path / "a" / "item.jpg", tmp_path / "b" / "item.png"],
        [],
        registry=registry,
        echo=lambda line: None,
    )
    assert [r.png.name for r in results] == ["item.png", "item-2.png"]  # the second does not overwrite the first
    for result in results:
        assert abs(sum(result.probabilities) - 1) < 1e-5
        assert_png(result.png)


@pytest.mark.parametrize("variant", ["logits", "log_probs", "probs"])
def test_every_model_output_kind_gives_probabilities(registry, trained, tmp_path: Path, variant: str) -> None:
    run_dir = copy_run(trained(variant), tmp_path)
    loaded = predict.load_run(run_dir, registry)
    assert loaded.output_kind == variant and not loaded.model.training
    [result] = predict.predict(run_dir, [], [5], top_k=2, registry=registry, echo=lambda line: None)
    assert abs(sum(result.probabilities) - 1) < 1e-5 and len(result.top) == 2
    # The trained models learn this easy data: the most probable class is the true one.
    assert result.top[0][0] == result.label
    assert_png(result.png)


def test_probabilities_by_output_kind() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    expected = torch.softmax(logits, dim=1)
    assert torch.allclose(predict.probabilities(logits, "logits"), expected)
    assert torch.allclose(predict.probabilities(torch.log_softmax(logits, dim=1), "log_probs"), expected)
    assert torch.equal(predict.probabilities(expected, "probs"), expected)
    with pytest.raises(ValueError, match="unknown model output kind 'scores'"):
        predict.probabilities(logits, "scores")


def test_class_names_fall_back_to_indices() -> None:
    assert predict.class_names_for((), 3) == ["0", "1", "2"]
    assert predict.class_names_for(("cat", "dog"), 3) == ["cat", "dog", "2"]


def test_synthetic_dataset_without_class_names_uses_indices(registry, tmp_path: Path) -> None:
    recipe_path = write_recipe(
        tmp_path / "synthetic.toml",
        SMALL_RECIPE.format(root="unused").replace(
            'name = "fashion_mnist"\nroot = "unused"', 'name = "synthetic"\nsize = 200\nnum_classes = 4'
        ),
    )
    # The dataset names no classes and the model has 10 outputs: the names are the indices 0..9.
    recipe = load_recipe(recipe_path, registry, ["train.epochs=1", "train.batch_size=100"])
    run_dir = engine.run(recipe, **QUIET).folder.path
    [result] = predict.predict(run_dir, [], [0], top_k=10, registry=registry, echo=lambda line: None)
    assert sorted(name for _, name, _ in result.top) == sorted(str(i) for i in range(10))


def test_evaluate_agrees_with_the_run_and_writes_its_files(registry, trained, tmp_path: Path) -> None:
    run_dir = copy_run(trained("imperfect"), tmp_path)
    lines: list[str] = []
    result = evaluation.evaluate(run_dir, registry=registry, echo=lines.append)
    final = list(csv.DictReader((run_dir / "metrics.csv").open()))[-1]
    assert 0.3 < result["test_accuracy"] < 1.0  # an imperfect model: the comparison below can fail
    assert round(result["test_accuracy"], 6) == float(final["test_accuracy"])
    assert result["test_loss"] == pytest.approx(float(final["test_loss"]), abs=2e-6)

    matrix = torch.tensor(result["confusion_matrix"])
    assert matrix.shape == (10, 10) and int(matrix.sum()) == result["samples"] == 200
    assert int(matrix.trace()) / 200 == result["test_accuracy"]
    per_class = result["per_class"]
    assert [c["name"] for c in per_class] == list(FASHION_MNIST_CLASSES)
    assert [c["samples"] for c in per_class] == matrix.sum(dim=1).tolist()
    # Per-class accuracies, weighted by class size, average to the overall accuracy.
    weighted = sum(c["accuracy"] * c["samples"] for c in per_class) / 200
    assert weighted == pytest.approx(result["test_accuracy"])
    assert all(0 <= c["accuracy"] <= 1 for c in per_class)
    assert min(c["accuracy"] for c in per_class) < 1  # the imperfect model misses some class

    assert_png(run_dir / "confusion_matrix.png")
    saved = json.loads((run_dir / "evaluation.json").read_text())
    assert saved["test_accuracy"] == result["test_accuracy"] and saved["confusion_matrix"] == result["confusion_matrix"]
    assert any("test_accuracy" in line for line in lines) and any("Ankle boot" in line for line in lines)


def test_a_pickle_that_runs_code_is_refused_and_never_runs(registry, trained, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))  # unpickling this creates the sentinel file

    run_dir = copy_run(trained("log_probs"), tmp_path)
    for save in (
        lambda path: torch.save({"weight": Payload()}, path),  # torch's zip format
        lambda path: path.write_bytes(pickle.dumps({"weight": Payload()})),  # a bare pickle
    ):
        save(run_dir / "model.pt")
        with pytest.raises(UsageError) as info:
            predict.load_run(run_dir, registry)
        message = str(info.value)
        assert message.startswith(f"refused to load {run_dir / 'model.pt'}: it is not a plain weights file")
        assert "weights_only=True" in message
        with pytest.raises(UsageError, match="refused"):
            evaluation.evaluate(run_dir, registry=registry, echo=lambda line: None)
        assert not sentinel.exists()
    # The payload is live: unsafe loading would have run it (which is why mlrun never does).
    pickle.loads(pickle.dumps({"weight": Payload()}))
    assert sentinel.exists()


def test_truncated_weights_are_reported_as_corrupt(registry, trained, tmp_path: Path) -> None:
    run_dir = copy_run(trained("log_probs"), tmp_path)
    weights = run_dir / "model.pt"
    data = weights.read_bytes()
    for broken in (data[: len(data) // 2], b""):
        weights.write_bytes(broken)
        with pytest.raises(UsageError, match=re.escape(f"{weights} is corrupt or truncated (")):
            predict.load_run(run_dir, registry)


def test_weights_of_another_model_do_not_fit(registry, trained, tmp_path: Path) -> None:
    run_dir = copy_run(trained("log_probs"), tmp_path)
    shutil.copy(trained("probs") / "model.pt", run_dir / "model.pt")
    with pytest.raises(UsageError, match="does not fit model 'classifier'"):
        predict.load_run(run_dir, registry)


def test_folders_that_are_not_finished_runs(registry, trained, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such run folder"):
        predict.load_run(tmp_path / "nowhere", registry)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=re.escape(f"{tmp_path / 'empty' / 'recipe.toml'} not found")):
        predict.load_run(tmp_path / "empty", registry)
    run_dir = copy_run(trained("log_probs"), tmp_path)
    (run_dir / "model.pt").unlink()
    status = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**status, "status": "interrupted"}))
    with pytest.raises(UsageError) as info:
        predict.predict(run_dir, [], [0], registry=registry, echo=lambda line: None)
    assert str(info.value) == (
        f"{run_dir / 'model.pt'} not found: the run did not finish (run.json says: interrupted); "
        "resume it or pick another run"
    )


def test_bad_predict_inputs_are_usage_errors_and_write_nothing(registry, trained, tmp_path: Path) -> None:
    run_dir = copy_run(trained("log_probs"), tmp_path)
    quiet = {"registry": registry, "echo": lambda line: None}
    with pytest.raises(
        UsageError,
        match=re.escape(
            "index 200 is out of range: the test split of dataset 'fashion_mnist' has 200 samples (valid: 0..199)"
        ),
    ):
        predict.predict(run_dir, [], [3, 200], **quiet)
    with pytest.raises(UsageError, match="index -1 is out of range"):
        predict.predict(run_dir, [], [-1], **quiet)
    with pytest.raises(UsageError, match=re.escape(f"{tmp_path / 'missing.png'}: no such image file")):
        predict.predict(run_dir, [tmp_path / "missing.png"], [], **quiet)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(UsageError, match=re.escape(f"{tmp_path / 'notes.png'}: not a readable image")):
        predict.predict(run_dir, [tmp_path / "notes.png"], [], **quiet)
    with pytest.raises(UsageError, match="nothing to predict"):
        predict.predict(run_dir, [], [], **quiet)
    with pytest.raises(UsageError, match="--top-k must be at least 1"):
        predict.predict(run_dir, [], [0], top_k=0, **quiet)
    assert not (run_dir / "predictions").exists()  # nothing was written for any bad call


def test_load_image_gives_28x28_grayscale(tmp_path: Path) -> None:
    Image.new("RGBA", (50, 40), (255, 0, 0, 255)).save(tmp_path / "red.png")
    image = predict.load_image(tmp_path / "red.png")
    assert image.mode == "L" and image.size == (28, 28)
    with pytest.raises(UsageError, match="not a file"):
        predict.load_image(tmp_path)


def test_predict_and_evaluate_never_load_the_training_loop() -> None:
    import subprocess
    import sys

    code = "import sys, mlrun.predict, mlrun.evaluation; assert 'mlrun.trainer' not in sys.modules, 'trainer loaded'"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_run_trained_on_a_gpu_predicts_anywhere(registry, trained, tmp_path: Path) -> None:
    run_dir = copy_run(trained("log_probs"), tmp_path)
    recipe_file = run_dir / "recipe.toml"
    text = recipe_file.read_text()
    assert 'device = "auto"' in text
    recipe_file.write_text(text.replace('device = "auto"', 'device = "cuda"'))
    loaded = predict.load_run(run_dir, registry)
    assert loaded.recipe.train.device == "cuda"  # the recipe as trained, not rewritten
    assert loaded.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def record_input(run_dir: Path, **keys: object) -> None:
    """Add keys to a run's run.json, as runs that record their raw input and class names do."""
    status = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**status, **keys}))


def test_predict_uses_the_runs_recorded_input_and_class_names(
    registry, trained, idx_root: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(trained("imperfect"), tmp_path)
    names = [f"kind-{i}" for i in range(10)]
    record_input(run_dir, classes=names, input={"mode": "L", "size": [28, 28]})
    big = stored_test_image(idx_root, 7).resize((56, 84)).convert("RGB")  # colour, another size and shape
    big.save(tmp_path / "big.png")
    stored_test_image(idx_root, 7).save(tmp_path / "same.png")
    quiet = {"registry": registry, "echo": lambda line: None}
    from_big, from_same, from_index = predict.predict(
        run_dir, [tmp_path / "big.png", tmp_path / "same.png"], [7], **quiet
    )
    assert [name for _, name, _ in from_big.top] == [names[i] for i, _, _ in from_big.top]  # run.json's names
    assert torch.allclose(torch.tensor(from_same.probabilities), torch.tensor(from_index.probabilities), atol=1e-6)
    assert from_big.probabilities != from_same.probabilities  # resized from 56x84: close, not identical
    assert_png(from_big.png)

    # An image folder of mixed sizes records no size: the file goes in as it is, so a wrong size is refused by name.
    record_input(run_dir, input={"mode": "L", "size": None})
    [same] = predict.predict(run_dir, [tmp_path / "same.png"], [], **quiet)
    assert same.probabilities == pytest.approx(from_same.probabilities, abs=1e-6)
    shutil.rmtree(run_dir / "predictions")
    with pytest.raises(UsageError) as info:
        predict.predict(run_dir, [tmp_path / "same.png", tmp_path / "big.png"], [], **quiet)
    assert str(info.value).startswith(f"{tmp_path / 'big.png'}: the model of {run_dir} cannot take this input")
    assert "[1, 84, 56]" in str(info.value)
    assert not (run_dir / "predictions").exists()  # the good image's picture was not written either


def test_bad_recorded_input_names_run_json(registry, trained, tmp_path: Path) -> None:
    from mlrun.image_input import run_input

    run_dir = copy_run(trained("log_probs"), tmp_path)
    recorded = run_input(run_dir)  # what the engine records for an IDX dataset
    assert (recorded.mode, recorded.size, recorded.recorded) == ("L", (28, 28), True)
    assert recorded.classes == FASHION_MNIST_CLASSES
    status = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({k: v for k, v in status.items() if k not in ("input", "classes")}))
    assert run_input(run_dir) == predict.RunInput()  # an older run: 28x28 grayscale, the dataset's names
    assert predict.load_run(run_dir, registry).class_names == FASHION_MNIST_CLASSES
    for keys, message in (
        ({"input": {"mode": "CMYK", "size": None}}, "input.mode: expected one of L, RGB, got 'CMYK'"),
        ({"input": {"mode": "RGB", "size": [0, 3]}}, "input.size: expected [height, width] or null, got [0, 3]"),
        ({"input": None, "classes": "cat dog"}, "classes: expected a list of class names, got 'cat dog'"),
    ):
        record_input(run_dir, **keys)
        with pytest.raises(UsageError, match=re.escape(f"{run_dir / 'run.json'}: {message}")):
            predict.load_run(run_dir, registry)


def test_open_image_converts_to_the_runs_mode_and_size(tmp_path: Path) -> None:
    from mlrun.image_input import open_image

    Image.new("L", (50, 40), 200).save(tmp_path / "gray.png")
    image = open_image(tmp_path / "gray.png", "RGB", (20, 30))  # size is (height, width)
    assert image.mode == "RGB" and image.size == (30, 20)
    assert open_image(tmp_path / "gray.png", "L", None).size == (50, 40)  # no recorded size: kept as it is
    data = (tmp_path / "gray.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match=re.escape(f"{tmp_path / 'cut.png'}: not a readable image")):
        open_image(tmp_path / "cut.png", "RGB", None)
    with pytest.raises(UsageError, match=re.escape(f"{tmp_path}: not a file")):
        open_image(tmp_path, "RGB", None)


def test_the_picture_is_the_image_the_model_saw_before_normalisation(registry, trained, tmp_path: Path) -> None:
    from torchvision.transforms.functional import to_tensor

    from mlrun.image_input import EvalPipeline

    loaded = predict.load_run(trained("log_probs"), registry)
    image = Image.new("L", (28, 28), 51)
    model_input, picture = EvalPipeline(loaded.recipe.transforms)(image)
    assert torch.equal(picture, to_tensor(image))  # what the model saw, in its own colours
    from mlrun import plots

    assert abs(plots._displayable(picture) - 0.2).max() < 1e-6  # shown as it is (not stretched): dark stays dark
    assert torch.allclose(model_input, (to_tensor(image) - 0.5) / 0.5)  # normalised, as the model got it
