"""The command line, driven as a user drives it: through a subprocess."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import RECIPES, run_cli

SUMMARY = str(RECIPES / "summary.toml")


def test_list_shows_every_builtin_with_its_plugin() -> None:
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "PLUGIN", "SUMMARY"]
    rows = {tuple(line.split()[:3]) for line in lines[1:]}
    for kind, name in [("dataset", "fashion_mnist"), ("transform", "normalize"), ("model", "classifier"),
                       ("criterion", "nll"), ("optimizer", "adam")]:  # fmt: skip
        assert (kind, name, "built-in") in rows


def test_list_json_parses_and_has_parameters() -> None:
    result = run_cli("list", "optimizer", "--json")
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert {"adam", "sgd", "adamw", "rmsprop"} <= set(entries)
    lr = next(p for p in entries["adam"]["parameters"] if p["name"] == "lr")
    assert lr == {"name": "lr", "type": "number (> 0)", "required": False, "default": 0.001}
    assert entries["sgd"]["plugin"] == "built-in" and entries["sgd"]["summary"]


def test_check_prints_the_resolved_recipe_and_trains_nothing(tmp_path: Path) -> None:
    result = run_cli("check", SUMMARY, "optimizer.lr=0.003", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "lr = 0.003" in result.stdout and "eval_batch_size = 1000" in result.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_run_writes_a_run_folder(small_recipe: Path, tmp_path: Path) -> None:
    result = run_cli(str(small_recipe), "train.epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1  train_loss" in result.stdout and "test_accuracy" in result.stdout
    (folder,) = (tmp_path / "runs").iterdir()
    names = {p.name for p in folder.iterdir()}
    assert {"recipe.toml", "run.json", "metrics.csv", "model.pt", "checkpoint.pt", "steps.csv"} <= names
    assert not [n for n in names if n.endswith(".tmp")]  # no temporary files left behind


@pytest.mark.slow
def test_run_subcommand_is_the_same_as_the_short_form(small_recipe: Path, tmp_path: Path) -> None:
    result = run_cli("run", str(small_recipe), "train.epochs=1", "train.run_name=named", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p.name.startswith("named-") for p in (tmp_path / "runs").iterdir()] == [True]


def test_bad_input_exits_2_without_traceback_and_writes_nothing(tmp_path: Path) -> None:
    result = run_cli(SUMMARY, "optimizer.lerning_rate=0.1", "train.epochs=0", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "did you mean 'lr'?" in result.stderr
    assert "train.epochs: must be greater than or equal to 1, got 0" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("--debug", "check", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "Traceback" in result.stderr and "no such recipe file" in result.stderr


def test_debug_is_also_accepted_after_the_command(tmp_path: Path) -> None:
    result = run_cli("check", str(tmp_path / "missing.toml"), "--debug")
    assert result.returncode == 2 and "Traceback" in result.stderr and "no such recipe file" in result.stderr


def test_list_of_an_unknown_kind_suggests_the_closest() -> None:
    result = run_cli("list", "modl")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: unknown kind 'modl' — did you mean 'model'? (kinds: dataset, transform, model," in result.stderr


def test_missing_data_is_explained(tmp_path: Path) -> None:
    result = run_cli(SUMMARY, "dataset.name=mnist", f"--data={tmp_path / 'nothing'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "MNIST not found. Tried:" in result.stderr and "--data DIR" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "nothing").exists()


def test_help_has_examples() -> None:
    for args in (("--help",), ("run", "--help"), ("check", "--help"), ("list", "--help")):
        result = run_cli(*args)
        assert result.returncode == 0 and "examples:" in result.stdout, args


@pytest.mark.slow
def test_predict_evaluate_and_runs_commands(small_recipe: Path, tmp_path: Path) -> None:
    assert run_cli(str(small_recipe), "train.epochs=1", cwd=tmp_path).returncode == 0
    (folder,) = (tmp_path / "runs").iterdir()
    predicted = run_cli("predict", str(folder), "--index", "3", "--top-k", "10", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    probabilities = [float(line.split()[-1]) for line in predicted.stdout.splitlines() if re.match(r"\s+\d+\. ", line)]
    assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-3
    assert (folder / "predictions" / "index-3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluated = run_cli("evaluate", str(folder), cwd=tmp_path)
    assert evaluated.returncode == 0 and (folder / "confusion_matrix.png").is_file()
    listed = run_cli("runs", cwd=tmp_path)
    assert folder.name in listed.stdout and "completed" in listed.stdout
    missing = run_cli("predict", str(tmp_path / "nope"), "--index", "0", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
