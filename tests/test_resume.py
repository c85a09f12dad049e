"""Runs that lose nothing: atomic checkpoints, exact resume, signals, NaN and bad checkpoints."""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mlrun import checkpoint, engine, evaluator, files
from mlrun.errors import MlrunError, UsageError
from mlrun.recipe import ComponentSpec, load_recipe
from mlrun.runs import RunFolder
from mlrun.stopping import NonFiniteLoss

from conftest import QUIET, interrupted_at, wait_for_checkpoint

LONG = ["train.epochs=40", "train.checkpoint_every_steps=7"]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt", weights_only=True)


def scores(folder: Path) -> list[tuple[str, str, str]]:
    """Every epoch's losses and accuracy (not its wall time)."""
    rows = csv.DictReader((folder / "metrics.csv").open())
    return [(r["train_loss"], r["test_loss"], r["test_accuracy"]) for r in rows]


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    assert scores(a) == scores(b)


def reference(registry, small_recipe: Path, tmp_path: Path, overrides: list[str]) -> Path:
    recipe = load_recipe(small_recipe, registry, [*overrides, f"train.output_dir={tmp_path / 'reference'}"])
    return engine.run(recipe, **QUIET).folder.path


def test_resume_after_an_epoch_is_bitwise_identical(registry, small_recipe: Path, tmp_path: Path, monkeypatch) -> None:
    overrides = ["train.epochs=3"]
    expected = reference(registry, small_recipe, tmp_path, overrides)

    # epoch 2 trained, not yet checkpointed: an abrupt stop
    with interrupted_at(evaluator, "evaluate_sums", 2), pytest.raises(KeyboardInterrupt):
        engine.run(load_recipe(small_recipe, registry, overrides), **QUIET)
    (folder,) = Path("runs").iterdir()
    assert json.loads((folder / "run.json").read_text())["status"] == "interrupted"
    assert checkpoint.load(folder / "checkpoint.pt")["epoch"] == 2  # epoch 1 done
    engine.run(load_recipe(folder / "recipe.toml", registry), resume=RunFolder(folder), **QUIET)
    assert json.loads((folder / "run.json").read_text())["status"] == "completed"
    assert_same_run(folder, expected)


def start(small_recipe: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mlrun", str(small_recipe), *LONG, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_kill_9_at_a_random_moment_then_resume_gives_the_same_weights(
    registry, small_recipe: Path, tmp_path: Path
) -> None:
    expected = reference(registry, small_recipe, tmp_path, LONG)
    rng = random.Random()
    for _attempt in range(5):
        process = start(small_recipe)
        folder = wait_for_checkpoint(process)
        time.sleep(rng.uniform(0.0, 1.0))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        if json.loads((folder / "run.json").read_text())["status"] == "running":
            break  # killed mid-training, as intended
        for run in Path("runs").iterdir():  # finished before the kill: try again
            for file in run.iterdir():
                file.unlink()
            run.rmdir()
    else:
        pytest.fail("training always finished before the kill; make it longer")
    assert not (folder / "model.pt").exists()
    resumed = subprocess.run([sys.executable, "-m", "mlrun", "resume", str(folder)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at epoch" in resumed.stdout
    assert_same_run(folder, expected)


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_prints_the_resume_command_and_resume_completes(
    registry, small_recipe: Path, tmp_path: Path
) -> None:
    expected = reference(registry, small_recipe, tmp_path, LONG)
    process = start(small_recipe)
    folder = wait_for_checkpoint(process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "SIGINT received: stopping after this step" in out
    assert f"resume with: mlrun resume {folder}" in err and "Traceback" not in err
    status = json.loads((folder / "run.json").read_text())
    assert status["status"] == "interrupted"
    saved = checkpoint.load(folder / "checkpoint.pt")
    assert saved["indices"] is not None and saved["step"] > 0  # stopped mid-epoch
    resumed = subprocess.run([sys.executable, "-m", "mlrun", "resume", str(folder)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((folder / "run.json").read_text())["status"] == "completed"
    assert_same_run(folder, expected)


@pytest.mark.slow
def test_sigterm_exits_143(small_recipe: Path) -> None:
    process = start(small_recipe)
    wait_for_checkpoint(process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143 and "SIGTERM: stopped at epoch" in err


def test_failed_checkpoint_write_is_reported_and_the_previous_one_survives(
    registry, small_recipe: Path, monkeypatch
) -> None:
    real_write, real_fsync = files.atomic_write, os.fsync
    state = {"checkpoints": 0}

    def full_disk_on_second_checkpoint(path, write):
        if path.name == "checkpoint.pt":
            state["checkpoints"] += 1
            if state["checkpoints"] == 2:

                def no_space(fd):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                monkeypatch.setattr(os, "fsync", no_space)
        return real_write(path, write)

    monkeypatch.setattr(checkpoint, "atomic_write", full_disk_on_second_checkpoint)
    with pytest.raises(MlrunError) as info:
        engine.run(load_recipe(small_recipe, registry, ["train.epochs=3"]), **QUIET)
    monkeypatch.setattr(os, "fsync", real_fsync)
    (folder,) = Path("runs").iterdir()
    assert str(info.value) == (
        f"could not save the checkpoint after epoch 2: could not write {folder / 'checkpoint.pt'}: "
        "No space left on device"
    )
    assert checkpoint.load(folder / "checkpoint.pt")["epoch"] == 2  # the first one, intact
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


class RunsCode:
    """Unpickling this would create a file: the stand-in for arbitrary code."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.mark.slow
def test_a_checkpoint_that_would_run_code_is_refused(registry, small_recipe: Path, tmp_path: Path) -> None:
    folder = engine.run(load_recipe(small_recipe, registry, ["train.epochs=1"]), **QUIET).folder.path
    sentinel = tmp_path / "code-ran"
    torch.save({"format": 1, "model": RunsCode(sentinel)}, folder / "checkpoint.pt")
    result = subprocess.run([sys.executable, "-m", "mlrun", "resume", str(folder)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"refused to load {folder / 'checkpoint.pt'}" in result.stderr and "weights_only=True" in result.stderr
    assert not sentinel.exists()


def test_a_truncated_checkpoint_is_reported_as_corrupt(registry, small_recipe: Path) -> None:
    folder = engine.run(load_recipe(small_recipe, registry, ["train.epochs=1"]), **QUIET).folder.path
    data = (folder / "checkpoint.pt").read_bytes()
    (folder / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="is corrupt or truncated"):
        checkpoint.load(folder / "checkpoint.pt")


def test_nan_loss_stops_the_run_naming_the_step_and_keeps_a_finite_checkpoint(registry, small_recipe: Path) -> None:
    recipe = load_recipe(small_recipe, registry, ["train.epochs=3"])
    real = recipe.criterion.component.factory
    calls = {"n": 0}

    def nan_at_step_25():
        loss = real()

        def poisoned(output, labels):
            value = loss(output, labels)
            if torch.is_grad_enabled():
                calls["n"] += 1
                if calls["n"] == 25:
                    return value * float("nan")
            return value

        return poisoned

    import dataclasses

    entry = recipe.criterion.entry
    recipe.criterion = ComponentSpec(
        dataclasses.replace(entry, component=dataclasses.replace(entry.component, factory=nan_at_step_25)), {}
    )
    with pytest.raises(NonFiniteLoss) as info:
        engine.run(recipe, **QUIET)
    assert info.value.exit_code == 1
    assert str(info.value).startswith("non-finite loss at epoch 2, step 6 (loss = nan)")  # 19 steps per epoch
    (folder,) = Path("runs").iterdir()
    status = json.loads((folder / "run.json").read_text())
    assert status["status"] == "failed" and "epoch 2, step 6" in status["error"]
    assert (folder / "steps.csv").read_text().splitlines()[-1] == "2,6,nan,,"
    saved = checkpoint.load(folder / "checkpoint.pt")
    assert saved["epoch"] == 2 and all(torch.isfinite(t).all() for t in saved["model"].values())


@pytest.mark.slow
def test_resume_with_a_changed_recipe_is_refused_unless_forced(registry, small_recipe: Path) -> None:
    folder = engine.run(load_recipe(small_recipe, registry, ["train.epochs=1"]), **QUIET).folder.path
    refused = subprocess.run([sys.executable, "-m", "mlrun", "resume", str(folder), "optimizer.lr=0.5", "train.epochs=2"],
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 2
    assert "changed: optimizer.lr" in refused.stderr and "changed: train.epochs" in refused.stderr
    forced = subprocess.run([sys.executable, "-m", "mlrun", "resume", str(folder), "train.epochs=2", "--force"],
                            capture_output=True, text=True)  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert [int(r["epoch"]) for r in csv.DictReader((folder / "metrics.csv").open())] == [1, 2]
