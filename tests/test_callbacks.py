"""Callbacks: the events and their data, state in checkpoints (exact resume), the error policy, the built-ins."""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import mlrun
from mlrun import checkpoint, engine, evaluator
from mlrun.descriptor_checks import descriptor_problems
from mlrun.recipe import load_recipe
from mlrun.runs import RunFolder

from conftest import QUIET, RECIPES, interrupted_at, run_cli, wait_for_checkpoint
from plugin_fakes import install_fake

SYNTHETIC = ["dataset.name=synthetic", "dataset.size=400", "train.batch_size=32", "train.threads=1"]
TRACKED = 'callbacks=[{name="tensorboard", every_n_steps=1}, {name="ema", decay=0.9, warmup_steps=3}]'

RECORDER = """
import json
from mlrun import Callback, hookimpl

class Recorder:
    def __init__(self, fail_in, after):
        self.fail_in, self.after, self.events, self.seen = fail_in, after, [], 0

    def _record(self, run, name, data):
        self.events.append([name, data])
        (run.run_dir / ("events.json" if run.rank == 0 else f"events-{run.rank}.json")).write_text(json.dumps(self.events))
        if name == self.fail_in:
            self.seen += 1
            if self.seen > self.after:
                raise ConnectionError("tracking server unreachable")

    def on_fit_start(self, run):
        self._record(run, "on_fit_start", {"epochs": run.epochs, "steps_per_epoch": run.steps_per_epoch,
                     "rank": run.rank, "world_size": run.world_size, "model": type(run.model).__name__,
                     "recipe_model": run.recipe["model"]["name"]})

    def on_step_end(self, run, step):
        self._record(run, "on_step_end", [step.epoch, step.step, step.global_step, step.loss, step.lr, step.grad_norm])

    def on_evaluate_end(self, run, epoch, figures):
        self._record(run, "on_evaluate_end", [epoch, figures])

    def on_epoch_end(self, run, epoch):
        self._record(run, "on_epoch_end", [epoch.epoch, epoch.train_loss, epoch.figures, epoch.lr, epoch.seconds])

    def on_fit_end(self, run, end):
        self._record(run, "on_fit_end", [end.status, end.reason, end.best])

def recorder(fail_in: str = "", after: int = 0) -> Recorder:
    return Recorder(fail_in, after)

@hookimpl
def register_callbacks():
    return [
        Callback("recorder", recorder, "records every event"),
        Callback("recording_logger", recorder, "records every event; warns on errors", logger=True, on_error="warn"),
    ]
"""


def events(folder: Path) -> list[list[Any]]:
    return json.loads((folder / "events.json").read_text())


def status(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "run.json").read_text())


def metrics_rows(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "metrics.csv").open()))


@pytest.fixture
def recording(site: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    install_fake(site, "mlrun-fake-recorder", RECORDER)
    monkeypatch.setenv("MLRUN_PLUGINS", "mlrun_fake_recorder")
    return mlrun.default_registry()


def run_summary(registry: Any, *overrides: str) -> Path:
    recipe = load_recipe(RECIPES / "summary.toml", registry, [*SYNTHETIC, *overrides])
    return engine.run(recipe, **QUIET).folder.path


def test_events_fire_in_order_with_the_documented_data(recording: Any, tmp_path: Path) -> None:
    folder = run_summary(
        recording, "train.epochs=2", "train.val_fraction=0.2", "train.monitor=val.accuracy", "train.clip_grad_norm=1.0",
        'callbacks=[{name="recorder"}]',
    )  # fmt: skip
    found = events(folder)
    names = [name for name, _ in found]
    per_epoch = ["on_step_end"] * 10 + ["on_evaluate_end", "on_epoch_end"]  # 320 samples / 32
    assert names == ["on_fit_start", *per_epoch, *per_epoch, "on_fit_end"]
    assert found[0][1] == {"epochs": 2, "steps_per_epoch": 10, "rank": 0, "world_size": 1,
                           "model": "Classifier", "recipe_model": "classifier"}  # fmt: skip
    steps = [data for name, data in found if name == "on_step_end"]
    with (folder / "steps.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [s[:3] for s in steps] == [[int(r["epoch"]), int(r["step"]), i + 1] for i, r in enumerate(rows)]
    assert [s[3] for s in steps] == pytest.approx([float(r["train_loss"]) for r in rows])
    assert all(s[4] == 0.01 and s[5] is not None and s[5] > 0 for s in steps)  # clipping: the norm is measured
    written = metrics_rows(folder)
    epoch_ends = [data for name, data in found if name == "on_epoch_end"]
    for row, (epoch, train_loss, figures, lr, seconds) in zip(written, epoch_ends, strict=True):
        assert epoch == int(row["epoch"]) and train_loss == pytest.approx(float(row["train_loss"]))
        assert set(figures) == {"val_loss", "val_accuracy"} and figures["val_accuracy"] == float(row["val_accuracy"])
        assert lr == float(row["lr"]) and seconds == float(row["seconds"])
    assert [data for name, data in found if name == "on_evaluate_end"] == [[e[0], e[2]] for e in epoch_ends]
    end_status, reason, best = found[-1][1]
    assert end_status == "completed" and reason == "" and best["best_epoch"] in (1, 2)


def test_installing_a_callback_plugin_changes_no_run(recording: Any, tmp_path: Path) -> None:
    folder = run_summary(recording, "train.epochs=1")
    assert not (folder / "events.json").exists() and not (folder / "tensorboard").exists()


def test_a_raising_callback_fails_the_run_naming_it_and_its_plugin(recording: Any, tmp_path: Path) -> None:
    with pytest.raises(mlrun.errors.MlrunError) as raised:
        run_summary(recording, "train.epochs=2", 'callbacks=[{name="recorder", fail_in="on_epoch_end", after=1}]')
    message = raised.value.render()
    assert "callback 'recorder' (callbacks.0, from mlrun-fake-recorder==1.0) failed in on_epoch_end" in message
    assert "ConnectionError: tracking server unreachable" in message
    (folder,) = Path("runs").iterdir()
    assert status(folder)["status"] == "failed" and "failed in on_epoch_end" in status(folder)["error"]
    assert checkpoint.load(folder / "checkpoint.pt")["epoch"] == 2  # epoch 1's; epoch 2 failed before its own
    assert events(folder)[-1][0] == "on_fit_end" and events(folder)[-1][1][0] == "failed"


def test_a_warning_logger_warns_once_and_the_run_completes(
    recording: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = run_summary(recording, "train.epochs=2", 'callbacks=[{name="recording_logger", fail_in="on_step_end"}]')
    assert status(folder)["status"] == "completed"
    err = capsys.readouterr().err
    assert err.count("warning: callback 'recording_logger'") == 1 and "training goes on" in err
    (warned,) = status(folder)["callback_warnings"]
    assert warned == {
        "callback": "recording_logger", "plugin": "mlrun-fake-recorder==1.0", "event": "on_step_end",
        "error": "ConnectionError: tracking server unreachable", "count": 26,
    }  # fmt: skip


def test_warn_is_refused_for_a_callback_that_is_not_a_logger() -> None:
    def factory() -> object:
        return object()

    assert descriptor_problems(mlrun.Callback("x", factory, "s", on_error="warn")) == [
        "on_error='warn' is only for loggers (logger=True): a callback that changes training must fail the run "
        "when it breaks, or the run would silently differ"
    ]
    assert descriptor_problems(mlrun.Callback("x", factory, "s", logger=True, on_error="warn")) == []
    assert (
        "on_error must be 'fail' or 'warn'"
        in descriptor_problems(mlrun.Callback("x", factory, "s", on_error="skip"))[0]
    )  # type: ignore[arg-type]


def ema_weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "ema.pt", weights_only=True)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_ema_and_tensorboard_is_bitwise(registry: Any, tmp_path: Path, monkeypatch) -> None:
    overrides = [*SYNTHETIC, "train.epochs=3", TRACKED]
    expected = run_summary(registry, *overrides, f"train.output_dir={tmp_path / 'reference'}")
    # epoch 2 trained, not yet checkpointed: an abrupt stop
    with interrupted_at(evaluator, "evaluate_sums", 2), pytest.raises(KeyboardInterrupt):
        run_summary(registry, *overrides)
    (folder,) = Path("runs").iterdir()
    saved = checkpoint.load(folder / "checkpoint.pt")
    assert saved["epoch"] == 2 and saved["callbacks"]["1.ema"]["updates"] == 13
    assert (folder / "ema.pt").is_file()  # written however the run ends, an interrupted one too
    engine.run(load_recipe(folder / "recipe.toml", registry), resume=RunFolder(folder), **QUIET)
    assert status(folder)["status"] == "completed"
    assert_same(
        torch.load(folder / "model.pt", weights_only=True), torch.load(expected / "model.pt", weights_only=True)
    )
    assert_same(ema_weights(folder), ema_weights(expected))
    assert tensorboard_scalars(folder) == tensorboard_scalars(expected)  # no step logged twice


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder / "tensorboard"))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


@pytest.mark.parametrize("checkpoint_at", ["after the step", "after the epoch"])
def test_tensorboard_logs_each_scalar_once_when_resumed_from_an_epochs_last_step(
    tmp_path: Path, checkpoint_at: str
) -> None:
    """A step checkpoint on an epoch's last step comes before the epoch's scalars: a resume from it
    logs them again, and one taken after them must not lose them (the race a kill -9 can hit)."""
    from mlrun.builtins.callbacks import tensorboard
    from mlrun.callbacks import EpochInfo, RunInfo, StepInfo

    (tmp_path / "tensorboard").mkdir()
    run = RunInfo(tmp_path, {}, torch.nn.Linear(1, 1), 2, 4, 0, 1)
    figures = {"test_loss": 0.5, "test_accuracy": 0.75}

    def step(logger: Any, number: int) -> None:
        logger.on_step_end(run, StepInfo(1 + (number - 1) // 4, (number - 1) % 4, number, 1.0 / number, 0.1, None))

    def epoch(logger: Any, number: int) -> None:
        logger.on_epoch_end(run, EpochInfo(number, 0.3 * number, figures, 0.1, 1.0))

    first = tensorboard(every_n_steps=2)
    first.on_fit_start(run)
    for number in range(1, 5):
        step(first, number)
    state = first.state_dict() if checkpoint_at == "after the step" else None
    epoch(first, 1)
    state = state or first.state_dict()
    first.writer.flush()  # killed here: the events written so far are on disk
    resumed = tensorboard(every_n_steps=2)
    resumed.load_state_dict(state)
    resumed.on_fit_start(run)
    if checkpoint_at == "after the step":
        epoch(resumed, 1)
    for number in range(5, 9):
        step(resumed, number)
    epoch(resumed, 2)
    resumed.writer.close()
    scalars = tensorboard_scalars(tmp_path)
    assert scalars["epoch/epoch"] == [(4, 1.0), (8, 2.0)]
    assert scalars["train/loss"] == [(2, 0.5), (4, 0.25), (6, pytest.approx(1 / 6)), (8, 0.125)]
    assert [step for step, _ in scalars["epoch/test_accuracy"]] == [4, 8]


def test_tensorboard_event_files_match_metrics_csv(registry: Any, tmp_path: Path) -> None:
    folder = run_summary(
        registry, "train.epochs=2", "train.val_fraction=0.2", "train.monitor=val.accuracy",
        'callbacks=[{name="tensorboard", hparams=true}]',
    )  # fmt: skip
    scalars = tensorboard_scalars(folder)
    rows = metrics_rows(folder)
    for column in ("train_loss", "val_loss", "val_accuracy", "lr"):
        assert [v for _, v in scalars[f"epoch/{column}"]] == pytest.approx([float(r[column]) for r in rows])
    assert [step for step, _ in scalars["epoch/epoch"]] == [10, 20]  # the global step at each epoch's end
    assert "train/loss" not in scalars  # every_n_steps = 50 by default: 20 steps log none
    assert scalars["hparams/val_accuracy"][0][1] == pytest.approx(float(rows[-1]["val_accuracy"]))
    assert scalars["hparams/best_epoch"][0][1] in (1, 2)
    again = run_summary(registry, "train.epochs=2", 'callbacks=[{name="tensorboard", every_n_steps=5}]')
    with (again / "steps.csv").open() as file:
        steps = list(csv.DictReader(file))
    logged = tensorboard_scalars(again)
    assert [step for step, _ in logged["train/loss"]] == [5, 10, 15, 20, 25]
    assert [v for _, v in logged["train/loss"]] == pytest.approx(
        [float(steps[n - 1]["train_loss"]) for n in (5, 10, 15, 20, 25)]
    )
    assert "train/grad_norm" not in logged  # measured only when clipping


def test_ema_evaluates_and_saves_the_averaged_weights_when_asked(registry: Any, tmp_path: Path) -> None:
    plain = run_summary(registry, "train.epochs=2", f"train.output_dir={tmp_path / 'plain'}")
    folder = run_summary(registry, "train.epochs=2", 'callbacks=[{name="ema", decay=0.5, use_for_evaluation=true}]')
    averaged = ema_weights(folder)
    assert_same(torch.load(folder / "model.pt", weights_only=True), averaged)  # model.pt: the EMA
    assert metrics_rows(folder)[0]["train_loss"] == metrics_rows(plain)[0]["train_loss"]  # training is untouched
    assert metrics_rows(folder)[0]["test_loss"] != metrics_rows(plain)[0]["test_loss"]  # evaluated: the EMA
    state = checkpoint.load(folder / "checkpoint.pt")
    assert_same(state["model"], torch.load(plain / "model.pt", weights_only=True))  # the checkpoint: the model's own
    kept = run_summary(registry, "train.epochs=2", 'callbacks=[{name="ema", decay=0.5}]')
    assert_same(torch.load(kept / "model.pt", weights_only=True), torch.load(plain / "model.pt", weights_only=True))


def test_the_tensorboard_callback_without_tensorboard_installed_says_what_to_install(
    registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(mlrun.errors.UsageError) as raised:
        load_recipe(RECIPES / "summary.toml", registry, [*SYNTHETIC, 'callbacks=[{name="tensorboard"}]'])
    assert "pip install 'torch-mlrun[tensorboard]'" in raised.value.render()


@pytest.mark.slow
def test_kill_9_then_resume_with_ema_and_tensorboard_gives_the_same_weights(registry: Any, tmp_path: Path) -> None:
    overrides = [*SYNTHETIC, "dataset.size=2000", "train.epochs=20", "train.checkpoint_every_steps=7", TRACKED]
    expected = run_summary(registry, *overrides, f"train.output_dir={tmp_path / 'reference'}")
    rng = random.Random()
    for _attempt in range(5):
        process = subprocess.Popen([sys.executable, "-m", "mlrun", str(RECIPES / "summary.toml"), *overrides],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        folder = wait_for_checkpoint(process)
        time.sleep(rng.uniform(0.0, 1.0))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        if status(folder)["status"] == "running":
            break
        subprocess.run(["rm", "-rf", "runs"], check=True)
    else:
        pytest.fail("training always finished before the kill; make it longer")
    resumed = subprocess.run([sys.executable, "-m", "mlrun", "resume", str(folder)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same(
        torch.load(folder / "model.pt", weights_only=True), torch.load(expected / "model.pt", weights_only=True)
    )
    assert_same(ema_weights(folder), ema_weights(expected))
    assert tensorboard_scalars(folder) == tensorboard_scalars(expected)


@pytest.mark.slow
def test_under_ddp_a_logger_runs_on_rank_0_only(recording: Any, tmp_path: Path) -> None:
    args = [str(RECIPES / "summary.toml"), *SYNTHETIC, "--nproc", "2", "train.epochs=1"]
    both = 'callbacks=[{name="recording_logger"}, {name="ema"}]'
    result = run_cli(*args, both, "train.dist_timeout_s=60", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    found = events(folder)
    assert found[0][1]["rank"] == 0 and found[0][1]["world_size"] == 2 and found[0][1]["steps_per_epoch"] == 7
    assert not list(folder.glob("events-*.json"))  # rank 1 ran no logger
    assert status(folder)["distributed"]["ranks_in_sync"] is True  # ema ran on both ranks, weights agree
    assert (folder / "ema.pt").is_file()
