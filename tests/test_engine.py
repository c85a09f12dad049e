"""Training on small generated IDX data through the real torchvision loaders."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mlrun import build, engine, trainer
from mlrun.builtins import datasets
from mlrun.errors import MlrunError, UsageError
from mlrun.recipe import ComponentSpec, load_recipe

from conftest import QUIET, RECIPES


def test_training_learns_and_writes_the_run_folder(registry, small_recipe: Path) -> None:
    recipe = load_recipe(small_recipe, registry)
    result = engine.run(recipe, **QUIET)
    folder = result.folder.path
    assert folder.parent == Path("runs").resolve() or folder.parent == Path("runs")
    assert folder.name.startswith("small-")
    names = {p.name for p in folder.iterdir()}
    assert {"checkpoint.pt", "metrics.csv", "model.pt", "recipe.toml", "run.json", "steps.csv"} <= names
    assert not [n for n in names if n.startswith(".") and n != ".lock"]  # no temporary files left behind
    steps = (folder / "steps.csv").read_text().splitlines()
    assert steps[0] == "epoch,step,train_loss,lr,grad_norm" and len(steps) == 1 + 2 * 19  # 600 samples / 32
    assert steps[1].endswith(",0.01,")  # the learning rate it used; no norm measured without clipping
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert set(rows[0]) == {"epoch", "train_loss", "test_loss", "test_accuracy", "lr", "seconds"}
    assert result.final_accuracy > 0.9  # the generated data is easy to learn
    status = json.loads((folder / "run.json").read_text())
    assert status["status"] == "completed" and status["versions"]["torch"] == torch.__version__
    state = torch.load(folder / "model.pt", weights_only=True)
    assert set(state) == set(build.build(recipe).model.state_dict())
    # the saved recipe is the resolved one and runs again as-is
    again = load_recipe(folder / "recipe.toml", registry)
    assert again.to_dict() == recipe.to_dict()


def test_same_seed_gives_identical_weights(registry, small_recipe: Path) -> None:
    runs = [engine.run(load_recipe(small_recipe, registry, ["train.epochs=1"]), **QUIET) for _ in range(2)]
    first, second = (torch.load(r.folder.path / "model.pt", weights_only=True) for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert runs[0].metrics[0]["train_loss"] == runs[1].metrics[0]["train_loss"]
    other = engine.run(load_recipe(small_recipe, registry, ["train.epochs=1", "train.seed=1"]), **QUIET)
    third = torch.load(other.folder.path / "model.pt", weights_only=True)
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_mnist_loader_reads_generated_idx_files(registry, tmp_path: Path, idx_root: Path) -> None:
    recipe = load_recipe(RECIPES / "summary.toml", registry,
                         ["dataset.name=mnist", f"dataset.root={idx_root}", "train.epochs=1"])  # fmt: skip
    built = build.build(recipe)
    assert (len(built.train_set), len(built.test_set)) == (600, 200)
    image, label = built.train_set[0]
    assert image.shape == (1, 28, 28) and isinstance(label, int)
    assert float(image.min()) >= -1.0 and float(image.max()) <= 1.0  # normalized with 0.5 / 0.5


def test_random_transforms_apply_to_training_only(registry, idx_root: Path) -> None:
    plain = load_recipe(RECIPES / "summary.toml", registry, [f"dataset.root={idx_root}"])
    flip = load_recipe(RECIPES / "summary.toml", registry, [f"dataset.root={idx_root}"])
    flip.transforms.insert(0, ComponentSpec(registry.get("transform", "random_horizontal_flip"), {"p": 1.0}))
    plain_built, flip_built = build.build(plain), build.build(flip)
    assert torch.equal(flip_built.train_set[0][0], plain_built.train_set[0][0].flip(-1))
    assert torch.equal(flip_built.test_set[0][0], plain_built.test_set[0][0])


def test_evaluation_runs_without_gradients_in_eval_mode(registry, small_recipe: Path) -> None:
    built = build.build(load_recipe(small_recipe, registry))
    seen = []
    built.model.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    loader = torch.utils.data.DataLoader(built.test_set, batch_size=100)
    loss, accuracy = trainer.evaluate(built.model, built.criterion, loader, built.device)
    assert seen and all(mode == (False, False) for mode in seen)
    assert built.model.training  # back in training mode afterwards
    assert 0.0 <= accuracy <= 1.0 and loss > 0


def test_missing_data_is_a_usage_error_and_writes_nothing(
    registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hide the system copy this machine may have installed.
    hidden = dataclasses.replace(datasets.FASHION_MNIST, system_dirs=(str(tmp_path / "absent"),))
    monkeypatch.setattr(datasets, "FASHION_MNIST", hidden)
    recipe = load_recipe(RECIPES / "summary.toml", registry, [f"dataset.root={tmp_path / 'nowhere'}"])
    with pytest.raises(UsageError, match="Fashion-MNIST not found"):
        engine.run(recipe, **QUIET)
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "nowhere").exists()


def test_unwritable_output_dir_is_found_before_training(registry, small_recipe: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    recipe = load_recipe(small_recipe, registry, [f"train.output_dir={blocker / 'runs'}"])
    with pytest.raises(UsageError, match="not writable"):
        engine.run(recipe, **QUIET)


def test_a_model_that_does_not_fit_the_data_fails_before_any_output(registry, small_recipe: Path) -> None:
    recipe = load_recipe(
        small_recipe, registry, ["model.name=mlp", "model.input_size=100", "criterion.name=cross_entropy"]
    )
    with pytest.raises(UsageError) as info:
        engine.run(recipe, **QUIET)
    message = str(info.value)
    assert "model 'mlp' and criterion 'cross_entropy' fail on a batch of dataset 'fashion_mnist'" in message
    assert "[2, 1, 28, 28]" in message and "mat1 and mat2" in message
    assert not Path("runs").exists()


def test_a_factory_that_raises_names_its_component_and_plugin(registry, small_recipe: Path) -> None:
    recipe = load_recipe(small_recipe, registry)

    def broken(**kwargs):
        raise RuntimeError("out of cheese")

    spec = recipe.model
    recipe.model = ComponentSpec(
        dataclasses.replace(spec.entry, component=dataclasses.replace(spec.component, factory=broken)), {}
    )
    with pytest.raises(
        MlrunError, match="could not build model 'classifier' \\(from built-in\\): RuntimeError: out of cheese"
    ):
        engine.run(recipe, **QUIET)
    assert not Path("runs").exists()


def test_lean_idx_reader_gives_torchvision_s_tensors(idx_root: Path) -> None:
    import pickle

    from torchvision import datasets as tv

    for name, folder in (("FashionMNIST", "FashionMNIST"), ("MNIST", "MNIST")):
        for train in (True, False):
            ours = getattr(datasets, f"Lean{name}")(str(idx_root), train=train)
            theirs = getattr(tv, name)(str(idx_root), train=train)
            assert ours.data.dtype == theirs.data.dtype and torch.equal(ours.data, theirs.data)
            assert ours.targets.dtype == theirs.targets.dtype and torch.equal(ours.targets, theirs.targets)
            assert torch.equal(pickle.loads(pickle.dumps(ours)).data, ours.data)  # workers can unpickle it
