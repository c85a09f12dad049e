"""Honest model selection (#14): the validation split in training, metrics columns, best.pt, early stopping.

Every run trains the Summary recipe on the generated synthetic dataset, one thread.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from mlrun import build, checkpoint, engine, evaluator, trainer
from mlrun.recipe import load_recipe
from mlrun.runs import RunFolder

from conftest import QUIET, RECIPES, interrupted_at, run_cli

SYNTHETIC = ["dataset.name=synthetic", "dataset.size=400", "train.batch_size=32", "train.threads=1"]
VAL = ["train.val_fraction=0.2"]
THREE = {"metrics": [{"name": "accuracy"}, {"name": "macro_f1"}, {"name": "confusion_matrix"}]}


def recipe_for(registry, tmp_path: Path, *overrides: str, extra: dict[str, Any] | None = None):
    options = [*SYNTHETIC, f"train.output_dir={tmp_path / 'runs'}", *overrides]
    return load_recipe(RECIPES / "summary.toml", registry, options, extra_data=extra)


def train(registry, tmp_path: Path, *overrides: str, extra: dict[str, Any] | None = None, echo=None) -> Path:
    recipe = recipe_for(registry, tmp_path, *overrides, extra=extra)
    return engine.run(recipe, **{**QUIET, **({"echo": echo} if echo else {})}).folder.path


def rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open() as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def status(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "run.json").read_text())


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------ the split in training


def test_the_split_is_the_same_on_both_data_paths_and_training_never_sees_it(registry, tmp_path: Path) -> None:
    memory = build.build(recipe_for(registry, tmp_path, *VAL), data_path="memory")
    loader = build.build(recipe_for(registry, tmp_path, *VAL, "train.data_path=loader"), data_path="loader")
    assert torch.equal(memory.val_indices, loader.val_indices)
    assert torch.equal(memory.train_indices, loader.train_indices)
    train_set, val_set = set(memory.train_indices.tolist()), set(memory.val_indices.tolist())
    assert not train_set & val_set and len(train_set | val_set) == len(memory.train_set) == 400
    assert memory.train_size == len(train_set) and len(val_set) == 80
    # The loader path evaluates a second copy of the training data with the evaluation transforms.
    assert loader.val_set is not loader.train_set and memory.val_set is memory.train_set


def test_training_batches_hold_training_samples_only(registry, tmp_path: Path, monkeypatch) -> None:
    seen: list[torch.Tensor] = []
    real_epoch = trainer.batches.TensorBatches.epoch

    def recording(self, indices):
        if self.batch_size == 32:  # the training source (evaluation batches hold 1000)
            seen.append(indices.clone())
        return real_epoch(self, indices)

    monkeypatch.setattr(trainer.batches.TensorBatches, "epoch", recording)
    recipe = recipe_for(registry, tmp_path, *VAL, "train.epochs=2")
    split = build.build(recipe)
    engine.run(recipe, **QUIET)
    assert len(seen) == 2 and all(len(indices) == split.train_size for indices in seen)
    assert set(torch.cat(seen).tolist()) == set(split.train_indices.tolist())


def test_both_data_paths_give_the_same_validation_figures(registry, tmp_path: Path) -> None:
    memory = train(registry, tmp_path, *VAL, "train.epochs=2")
    loader = train(registry, tmp_path, *VAL, "train.epochs=2", "train.data_path=loader")
    assert rows(memory) == rows(loader) and status(memory)["test"] == status(loader)["test"]
    assert same_weights(memory / "model.pt", loader / "model.pt")


def test_columns_say_the_split_and_the_test_split_is_evaluated_once_at_the_end(
    registry, tmp_path: Path, monkeypatch
) -> None:
    splits: list[str] = []
    real_evaluate = trainer.Trainer.evaluate

    def recording(self, split):
        splits.append(split)
        return real_evaluate(self, split)

    monkeypatch.setattr(trainer.Trainer, "evaluate", recording)
    folder = train(registry, tmp_path, *VAL, "train.epochs=3", extra=THREE)
    assert splits == ["val", "val", "val", "test"]
    header = (folder / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,val_loss,val_accuracy,val_macro_f1,lr,seconds"
    run = status(folder)
    test = run["test"]
    assert {"test_loss", "test_accuracy", "test_macro_f1", "test_confusion_matrix"} <= set(test)
    matrix = torch.tensor(test["test_confusion_matrix"])
    assert int(matrix.sum()) == 80 and float(matrix.diagonal().sum()) / 80 == pytest.approx(test["test_accuracy"])
    assert run["final"]["test_accuracy"] == test["test_accuracy"] and run["selection"]["split"] == "val"
    assert int(torch.tensor(run["selection"]["val_confusion_matrix"]).sum()) == 80  # the last epoch's


def test_without_a_validation_split_every_epoch_is_tested_and_the_run_says_so(registry, tmp_path: Path) -> None:
    lines: list[str] = []
    folder = train(registry, tmp_path, "train.epochs=2", echo=lines.append)
    assert (folder / "metrics.csv").read_text().startswith("epoch,train_loss,test_loss,test_accuracy,lr,seconds\n")
    assert any(line.startswith("evaluation: every epoch on the test split") for line in lines)
    note = status(folder)["selection"]["note"]
    assert "model selection uses the test split" in note and not (folder / "best.pt").exists()


def test_the_reported_figures_of_a_split_are_those_of_a_direct_evaluation(registry, tmp_path: Path) -> None:
    folder = train(registry, tmp_path, *VAL, "train.epochs=2", extra=THREE)
    recipe = recipe_for(registry, tmp_path, *VAL, extra=THREE)
    built = build.build(recipe)
    built.model.load_state_dict(weights(folder / "model.pt"))
    source = trainer.batches.batch_source(recipe, built.train_set, trainer.batches.plan(recipe), train=False)
    figures = evaluator.Evaluator(recipe, 10).run(
        built.model, built.criterion, source, built.val_indices, built.device,
        trainer.Precision("32", built.device), "val",
    )  # fmt: skip
    last = rows(folder)[-1]
    assert float(last["val_accuracy"]) == round(figures["accuracy"], 6)
    assert float(last["val_macro_f1"]) == round(figures["macro_f1"], 6)


# ------------------------------------------------------------------ selecting and stopping


def test_best_pt_holds_the_best_epochs_weights(registry, tmp_path: Path) -> None:
    folder = train(registry, tmp_path, *VAL, "train.epochs=4", "train.monitor=val.accuracy")
    selection = status(folder)["selection"]
    best = selection["best_epoch"]
    assert selection["mode"] == "max" and 1 <= best < 4
    assert selection["best_value"] == max(float(row["val_accuracy"]) for row in rows(folder))
    shorter = train(registry, tmp_path / "short", *VAL, f"train.epochs={best}")
    assert same_weights(folder / "best.pt", shorter / "model.pt")
    assert not same_weights(folder / "best.pt", folder / "model.pt")
    assert status(folder)["test"]["weights"] == "best.pt"


def test_mode_comes_from_the_figure_and_can_be_overridden(registry, tmp_path: Path) -> None:
    loss = recipe_for(registry, tmp_path, *VAL, "train.monitor=val.loss")
    from mlrun.selection import monitor_mode

    assert monitor_mode(loss.train, loss.metrics) == "min"
    forced = recipe_for(registry, tmp_path, *VAL, "train.monitor=val.accuracy", 'train.mode="min"')
    assert monitor_mode(forced.train, forced.metrics) == "min"


EARLY = [*VAL, "train.epochs=10", "train.monitor=val.loss", "train.min_delta=100", "train.patience=3"]


def test_early_stopping_completes_the_run_and_says_why(registry, tmp_path: Path) -> None:
    lines: list[str] = []
    folder = train(registry, tmp_path, *EARLY, echo=lines.append)
    run = status(folder)
    assert run["status"] == "completed" and len(rows(folder)) == 4
    assert run["selection"]["stopped_early_after_epoch"] == 4 and run["selection"]["best_epoch"] == 1
    assert "early stopping after epoch 4: val.loss has not improved by more than 100 for 3 epochs" in "\n".join(lines)
    assert lines[-1].startswith("done: test_accuracy") and "with best.pt (epoch 1)" in lines[-1]


def test_a_resumed_run_stops_at_the_same_epoch(registry, tmp_path: Path, monkeypatch) -> None:
    expected = train(registry, tmp_path / "whole", *EARLY)
    # epoch 3 trained, not checkpointed: an abrupt stop
    with interrupted_at(evaluator, "evaluate_sums", 3), pytest.raises(KeyboardInterrupt):
        train(registry, tmp_path / "cut", *EARLY)
    (folder,) = (tmp_path / "cut" / "runs").iterdir()
    engine.run(load_recipe(folder / "recipe.toml", registry), resume=RunFolder(folder), **QUIET)
    assert rows(folder) == rows(expected) and status(folder)["selection"] == status(expected)["selection"]
    assert same_weights(folder / "best.pt", expected / "best.pt")
    assert same_weights(folder / "model.pt", expected / "model.pt")


@pytest.mark.slow
def test_a_run_killed_and_resumed_stops_at_the_same_epoch(registry, tmp_path: Path) -> None:
    early = [*EARLY, "dataset.size=4000", f"train.output_dir={tmp_path / 'killed'}"]
    command = [sys.executable, "-m", "mlrun", str(RECIPES / "summary.toml"), *SYNTHETIC, *early]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "killed").glob("*/metrics.csv")) or len(rows(_only(tmp_path / "killed"))) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.kill()  # kill -9: no checkpoint, no status
    proc.communicate()
    folder = _only(tmp_path / "killed")
    assert status(folder)["status"] == "running"
    resumed = run_cli("resume", str(folder))
    assert resumed.returncode == 0, resumed.stderr
    expected = train(registry, tmp_path / "whole", *EARLY, "dataset.size=4000")
    assert rows(folder) == rows(expected) and status(folder)["selection"] == status(expected)["selection"]
    assert status(folder)["selection"]["stopped_early_after_epoch"] == 4
    assert same_weights(folder / "best.pt", expected / "best.pt")


def _only(output_dir: Path) -> Path:
    (folder,) = [p for p in output_dir.iterdir() if p.is_dir()]
    return folder


# ------------------------------------------------------------------ predict, evaluate, runs


def test_evaluate_and_predict_take_the_best_or_the_final_weights(registry, tmp_path: Path) -> None:
    folder = train(registry, tmp_path, *VAL, "train.epochs=3", "train.monitor=val.accuracy")
    chosen = run_cli("evaluate", str(folder))
    assert chosen.returncode == 0 and "weights best.pt" in chosen.stdout
    assert (
        json.loads((folder / "evaluation.json").read_text())["test_accuracy"] == status(folder)["test"]["test_accuracy"]
    )
    final = run_cli("evaluate", str(folder), "--weights", "final")
    assert final.returncode == 0 and "weights model.pt" in final.stdout
    predicted = run_cli("predict", str(folder), "--index", "0", "--weights", "best")
    assert predicted.returncode == 0, predicted.stderr


def test_runs_shows_the_best_validation_and_the_final_test_accuracy(registry, tmp_path: Path) -> None:
    folder = train(registry, tmp_path, *VAL, "train.epochs=2", "train.monitor=val.accuracy")
    listing = run_cli("runs", "--dir", str(tmp_path / "runs"))
    best = max(float(row["val_accuracy"]) for row in rows(folder))
    assert f"val {best:.4f}  test {status(folder)['test']['test_accuracy']:.4f}" in listing.stdout


# ------------------------------------------------------------------ refused with the fix


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([*VAL, "train.monitor=val.macro_f1"], 'add [[metrics]] name = "macro_f1" to compute it'),
        ([*VAL, "train.monitor=test.accuracy"], "the evaluated split is 'val'"),
        (["train.patience=2", "train.monitor=test.loss"], "set train.select_on_test = true"),
        (["train.monitor=val.accuracy"], "add train.val_fraction = 0.1"),
        ([*VAL, "train.patience=2"], 'set train.monitor = "val.loss"'),
        (["dataset.size=40", "train.val_fraction=0.9"], "fix: lower train.val_fraction to at most"),
        (["dataset.size=12", "train.val_fraction=0.1"], "has a single sample"),
        (["train.val_fraction=1.5"], "train.val_fraction: must be less than 1"),
        ([*VAL, "scheduler.name=reduce_on_plateau", "scheduler.monitor=val.f1"], "'val.f1' is not computed"),
    ],
)
def test_bad_selection_settings_are_refused_with_the_fix(tmp_path: Path, overrides: list[str], expected: str) -> None:
    args = [str(RECIPES / "summary.toml"), *SYNTHETIC, *overrides]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_selecting_on_the_test_split_is_allowed_when_acknowledged(registry, tmp_path: Path) -> None:
    folder = train(registry, tmp_path, "train.epochs=3", "train.monitor=test.accuracy", "train.select_on_test=true")
    assert status(folder)["selection"]["split"] == "test" and (folder / "best.pt").is_file()


@pytest.mark.slow
def test_two_ranks_share_one_split_and_report_the_single_process_figures(registry, tmp_path: Path) -> None:
    recipe = tmp_path / "val.toml"
    text = (RECIPES / "summary.toml").read_text()
    recipe.write_text(text + '\n[[metrics]]\nname = "accuracy"\n\n[[metrics]]\nname = "balanced_accuracy"\n')
    result = run_cli(str(recipe), "--nproc", "2", *SYNTHETIC, *VAL, "train.epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = _only(tmp_path / "runs")
    dist = status(folder)["distributed"]
    assert dist["ranks_in_sync"] and len(set(dist["rank_val_split_sha256"])) == 1
    extra = {"metrics": [{"name": "accuracy"}, {"name": "balanced_accuracy"}]}
    alone = recipe_for(registry, tmp_path, *VAL, extra=extra)
    built = build.build(alone)
    assert dist["rank_val_split_sha256"][0] == checkpoint.split_digest(built.val_indices)
    built.model.load_state_dict(weights(folder / "model.pt"))
    precision = trainer.Precision("32", built.device)
    plan = trainer.batches.plan(alone)
    val = evaluator.Evaluator(alone, 10).run(
        built.model, built.criterion, trainer.batches.batch_source(alone, built.train_set, plan, train=False),
        built.val_indices, built.device, precision, "val",
    )  # fmt: skip
    last = rows(folder)[-1]
    assert float(last["val_accuracy"]) == round(val["accuracy"], 6)
    assert float(last["val_balanced_accuracy"]) == round(val["balanced_accuracy"], 6)
    test = evaluator.Evaluator(alone, 10).run(
        built.model, built.criterion, trainer.batches.batch_source(alone, built.test_set, plan, train=False),
        torch.arange(len(built.test_set)), built.device, precision, "test",
    )  # fmt: skip
    assert status(folder)["test"]["test_accuracy"] == round(test["accuracy"], 6)


def test_a_checkpoint_from_before_metrics_existed_still_resumes(registry, tmp_path: Path) -> None:
    from mlrun import checkpoint

    folder = train(registry, tmp_path, "train.epochs=1")
    path = folder / "checkpoint.pt"
    saved = checkpoint.load(path)
    record = json.loads(saved["recipe"])
    del record["metrics"]
    for key in ("mode", "min_delta", "select_on_test"):
        del record["train"][key]
    saved["recipe"] = json.dumps(record, sort_keys=True)
    del saved["selection"]
    checkpoint.save(path, saved)
    recipe = load_recipe(folder / "recipe.toml", registry, ["train.epochs=2"])
    engine.run(recipe, resume=RunFolder(folder), force=True, **QUIET)
    assert status(folder)["status"] == "completed" and len(rows(folder)) == 2


OWN_SPLIT = """
from mlrun import Dataset, hookimpl
from mlrun.builtins.datasets import raw_tensors, synthetic

def with_val(*, train, transform, split, size: int = 400):
    # Three splits from the synthetic generator: "val" is a set of its own, apart from training.
    seed = {"train": 0, "val": 7, "test": 0}[split]
    return synthetic(train=train, transform=transform, size=size if split != "val" else 100, seed=seed)

@hookimpl
def register_datasets():
    return [Dataset("fake_with_val", with_val, "synthetic with its own validation split", channels=1,
                    tensors=raw_tensors)]
"""


def test_a_dataset_with_its_own_validation_split_wins(site: Path, tmp_path: Path, monkeypatch) -> None:
    from plugin_fakes import install_fake

    install_fake(site, "mlrun-fake-val", OWN_SPLIT)
    monkeypatch.setenv("MLRUN_PLUGINS", "mlrun_fake_val")
    args = [str(RECIPES / "summary.toml"), *SYNTHETIC, "dataset.name=fake_with_val", "train.epochs=2"]
    result = run_cli(*args, "train.monitor=val.accuracy", "train.val_fraction=0.2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(400 train / 100 validation / 80 test samples)" in result.stdout
    assert "the dataset's own validation split (100 samples) (train.val_fraction is ignored)" in result.stdout
    folder = _only(tmp_path / "runs")
    assert (folder / "best.pt").is_file() and status(folder)["selection"]["split"] == "val"
    loader = run_cli(*args, "train.monitor=val.accuracy", "train.data_path=loader", cwd=tmp_path)
    assert loader.returncode == 0, loader.stderr
    (other,) = [p for p in (tmp_path / "runs").iterdir() if p != folder]
    assert rows(other) == rows(folder)
