"""Tests of the mlrun-mlflow plugin: the recipe as params, the events against a real SQLite store, resume.

The events are called here as mlrun's engine calls them, with the data classes of
:mod:`mlrun.callbacks`; the repository's ``tests/test_mlflow_plugin.py`` trains real runs.
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

import pytest
import torch
from mlrun_mlflow import plugin
from mlrun_mlflow.plugin import MlflowLogger, flatten, mlflow_logger, override_text, recipe_params

from mlrun import Callback
from mlrun.callbacks import EpochInfo, FitEnd, RunInfo, StepInfo
from mlrun.testing import check_plugin, plugin_checks

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

RECIPE = {
    "dataset": {"name": "synthetic", "size": 320},
    "transforms": [{"name": "to_tensor"}, {"name": "normalize", "mean": [0.5], "std": [0.5]}],
    "model": {"name": "classifier"},
    "optimizer": {"name": "adam", "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-08, "fused": True},
    "metrics": [{"name": "accuracy"}],
    "train": {"epochs": 2, "run_name": "", "device": "auto"},
}


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables made (creating them takes seconds): copied per test."""
    path = tmp_path_factory.mktemp("store") / "mlruns.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(empty_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tracking URI of a fresh SQLite store in this test's folder (artefacts go to ./mlruns)."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(empty_store, tmp_path / "mlruns.db")
    return f"sqlite:///{tmp_path / 'mlruns.db'}"


def run_info(folder: Path, recipe: dict | None = None) -> RunInfo:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.toml").write_text("[model]\nname = 'classifier'\n")
    return RunInfo(folder, recipe or RECIPE, torch.nn.Linear(2, 2), epochs=2, steps_per_epoch=10, rank=0, world_size=1)


def train(logger: MlflowLogger, run: RunInfo, first: int, last: int, grad_norm: float | None = None) -> None:
    """Call the events of global steps ``first``..``last`` as the engine does (10 steps an epoch).

    The losses depend only on the step and the epoch, as in a resumed run, which is bitwise.
    """
    for global_step in range(first, last + 1):
        epoch, step = (global_step - 1) // 10 + 1, (global_step - 1) % 10 + 1
        logger.on_step_end(run, StepInfo(epoch, step, global_step, 1.0 / global_step, 0.01, grad_norm))
        if step == 10:
            figures = {"test_loss": 1.0 / epoch, "test_accuracy": 0.5 + epoch / 100}
            logger.on_epoch_end(run, EpochInfo(epoch, 2.0 / epoch, figures, 0.01, 0.5))


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# --------------------------------------------------------------------------- the recipe as params


def test_flatten_keys_settings_as_a_recipe_override_names_them() -> None:
    flat = dict(flatten(RECIPE))
    assert flat["optimizer.lr"] == 0.01
    assert flat["transforms.1.name"] == "normalize" and flat["transforms.1.mean"] == [0.5]
    assert flat["metrics.0.name"] == "accuracy"
    assert "transforms.0.name" in flat and "transforms" not in flat
    assert dict(flatten({"a": {"b": None, "c": 1}})) == {"a.c": 1}  # None is left out, as in recipe.toml


@pytest.mark.parametrize(
    ("value", "text"),
    [("cpu", "cpu"), (True, "true"), (0.01, "0.01"), (1e-08, "1e-08"), (3, "3"), ([0.5, 0.25], "[0.5, 0.25]"),
     (["a", "b"], '["a", "b"]'), (float("inf"), "inf")],
)  # fmt: skip
def test_values_are_written_as_an_override_writes_them(value, text) -> None:
    assert override_text(value) == text


def test_long_values_are_cut_to_mlflows_limit() -> None:
    params = recipe_params({"dataset": {"root": "x" * 10_000, "name": "y"}}, limit=500)
    assert len(params["dataset.root"]) == 500 and params["dataset.root"].endswith("...")
    assert params["dataset.name"] == "y"


# --------------------------------------------------------------------------- a run, against a real store


def test_a_run_is_logged_with_params_metrics_artefacts_and_status(store: str, tmp_path: Path) -> None:
    logger = mlflow_logger(tracking_uri=store, experiment="tests", log_every_steps=5)
    run = run_info(tmp_path / "runs" / "summary-1")
    (run.run_dir / "model.pt").write_bytes(b"weights")
    logger.on_fit_start(run)
    train(logger, run, 1, 20)
    logger.on_fit_end(run, FitEnd("completed", "", {"monitor": "test.accuracy", "best_epoch": 2, "best_value": 0.52}))

    client = MlflowClient(store)
    logged = client.get_run(logger.state_dict()["run_id"])
    assert logged.info.status == "FINISHED" and logged.info.run_name == "summary-1"
    assert client.get_experiment(logged.info.experiment_id).name == "tests"
    assert logged.data.params == recipe_params(RECIPE, limit=6000)
    assert logged.data.params["optimizer.betas"] == "[0.9, 0.999]" and logged.data.params["train.run_name"] == ""
    assert history(client, logged.info.run_id, "train_loss") == [(1, 2.0), (2, 1.0)]
    assert history(client, logged.info.run_id, "test_accuracy") == [(1, 0.51), (2, 0.52)]
    assert [s for s, _ in history(client, logged.info.run_id, "step_loss")] == [5, 10, 15, 20]
    assert {"lr", "seconds", "step_lr"} <= set(logged.data.metrics) and "step_grad_norm" not in logged.data.metrics
    tags = logged.data.tags
    assert tags["mlrun.status"] == "completed" and tags["mlrun.reason"] == ""
    assert tags["mlrun.run_dir"] == str(run.run_dir.resolve())
    best = (tags["mlrun.best.monitor"], tags["mlrun.best.epoch"], tags["mlrun.best.value"])
    assert best == ("test.accuracy", "2", "0.52")
    assert sorted(a.path for a in client.list_artifacts(logged.info.run_id)) == ["model.pt", "recipe.toml"]


ENDS = [("failed", "FAILED"), ("interrupted", "KILLED"), ("stopped", "FINISHED")]


@pytest.mark.parametrize(("status", "mlflow_status"), ENDS)
def test_how_the_run_ended_is_the_mlflow_status(store: str, tmp_path: Path, status: str, mlflow_status: str) -> None:
    logger = mlflow_logger(tracking_uri=store, log_artifacts=False, run_name="named")
    run = run_info(tmp_path / "runs" / "r")
    logger.on_fit_start(run)
    logger.on_fit_end(run, FitEnd(status, "NonFiniteLoss: the loss is nan", None))
    logged = MlflowClient(store).get_run(logger.run_id)
    assert logged.info.status == mlflow_status and logged.info.run_name == "named"
    assert logged.data.tags["mlrun.reason"] == "NonFiniteLoss: the loss is nan"
    assert MlflowClient(store).list_artifacts(logger.run_id) == []


def test_a_param_longer_than_mlflow_accepts_is_cut_and_logged(store: str, tmp_path: Path) -> None:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    logger = mlflow_logger(tracking_uri=store)
    run = run_info(tmp_path / "r", {**RECIPE, "dataset": {"name": "synthetic", "root": "/x" * 5000}})
    logger.on_fit_start(run)
    assert len(MlflowClient(store).get_run(logger.run_id).data.params["dataset.root"]) == MAX_PARAM_VAL_LENGTH


# --------------------------------------------------------------------------- resume


def test_resume_after_kill_continues_the_same_run_without_duplicates(store: str, tmp_path: Path) -> None:
    """kill -9 after epoch 1's metrics were sent but before its checkpoint: nothing is lost or sent twice."""
    run = run_info(tmp_path / "runs" / "r")
    first = mlflow_logger(tracking_uri=store, log_every_steps=3)
    first.on_fit_start(run)
    train(first, run, 1, 7, grad_norm=0.5)
    checkpoint = first.state_dict()  # holds the points of steps 3 and 6, not yet sent
    assert [point[2] for point in checkpoint["pending"]] == [3, 3, 3, 6, 6, 6]
    train(first, run, 8, 10, grad_norm=0.5)  # epoch 1 ends: its metrics and steps 3, 6, 9 are sent; then kill -9

    second = mlflow_logger(tracking_uri=store, log_every_steps=3)
    second.load_state_dict(checkpoint)
    second.on_fit_start(run)
    train(second, run, 8, 20, grad_norm=0.5)  # from the checkpoint: the end of epoch 1 again, then epoch 2
    second.on_fit_end(run, FitEnd("completed", "", None))

    client = MlflowClient(store)
    assert second.run_id == first.run_id
    assert len(client.search_runs([client.get_run(first.run_id).info.experiment_id])) == 1
    assert history(client, first.run_id, "train_loss") == [(1, 2.0), (2, 1.0)]
    assert [s for s, _ in history(client, first.run_id, "step_loss")] == [3, 6, 9, 12, 15, 18]
    assert [s for s, _ in history(client, first.run_id, "step_grad_norm")] == [3, 6, 9, 12, 15, 18]
    assert client.get_run(first.run_id).info.status == "FINISHED"


def test_points_only_the_checkpoint_held_are_sent_on_resume(store: str, tmp_path: Path) -> None:
    run = run_info(tmp_path / "runs" / "r")
    first = mlflow_logger(tracking_uri=store, log_every_steps=2)
    first.on_fit_start(run)
    for step in range(1, 5):
        first.on_step_end(run, StepInfo(1, step, step, float(step), 0.01, None))
    checkpoint = first.state_dict()  # then kill -9: steps 2 and 4 were never sent

    second = MlflowLogger(store, "mlrun", "", True, 2)
    second.load_state_dict(checkpoint)
    second.on_fit_start(run)
    second.on_fit_end(run, FitEnd("interrupted", "KeyboardInterrupt", None))
    assert history(MlflowClient(store), first.run_id, "step_loss") == [(2, 2.0), (4, 4.0)]
    assert MlflowClient(store).get_run(first.run_id).info.status == "KILLED"


def test_a_setting_changed_on_resume_is_kept_as_a_tag(store: str, tmp_path: Path) -> None:
    first = mlflow_logger(tracking_uri=store)
    first.on_fit_start(run_info(tmp_path / "r"))
    changed = {**RECIPE, "optimizer": {**RECIPE["optimizer"], "lr": 0.001}, "train": {**RECIPE["train"], "epochs": 4}}
    second = mlflow_logger(tracking_uri=store)
    second.load_state_dict(first.state_dict())
    second.on_fit_start(run_info(tmp_path / "r", changed))
    logged = MlflowClient(store).get_run(first.run_id).data
    assert logged.params["optimizer.lr"] == "0.01" and logged.tags["mlrun.resumed.optimizer.lr"] == "0.001"
    assert logged.tags["mlrun.resumed.train.epochs"] == "4"


def test_a_run_the_store_no_longer_has_starts_a_new_one(store: str, tmp_path: Path) -> None:
    logger = mlflow_logger(tracking_uri=store)
    logger.load_state_dict({"run_id": "0" * 32, "pending": []})
    logger.on_fit_start(run_info(tmp_path / "r"))
    assert logger.run_id != "0" * 32 and MlflowClient(store).get_run(logger.run_id).info.status == "RUNNING"


# --------------------------------------------------------------------------- failures


def test_an_unreachable_server_raises_once_then_logs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    logger = mlflow_logger(tracking_uri="http://127.0.0.1:9")
    run = run_info(tmp_path / "r")
    with pytest.raises(
        plugin.MlflowUnavailable,
        match=r"cannot log to MLflow at 'http://127.0.0.1:9' \(\[Errno \d+\] Connection refused\)",
    ):
        logger.on_fit_start(run)
    train(logger, run, 1, 10)  # no further error, no further attempt
    logger.on_fit_end(run, FitEnd("completed", "", None))
    assert logger.run_id is None


def test_an_error_is_told_in_one_short_line() -> None:
    assert plugin.why(ValueError("first line\nsecond")) == "ValueError: first line"
    long = plugin.why(RuntimeError("x" * 1000))
    assert len(long) == len("RuntimeError: ") + 200 and long.endswith("...")


@pytest.mark.parametrize(
    ("missing", "uri", "advice"),
    [("mlflow", "http://mlflow:5000", "pip install mlflow-skinny"), ("sqlalchemy", "sqlite:///x.db", "pip install sqlalchemy alembic"),
     ("alembic", "postgresql+psycopg2://db/mlflow", "pip install sqlalchemy alembic")],
)  # fmt: skip
def test_without_a_package_the_factory_says_what_to_install(monkeypatch, missing: str, uri: str, advice: str) -> None:
    real = plugin.importlib.util.find_spec
    monkeypatch.setattr(plugin.importlib.util, "find_spec", lambda name: None if name == missing else real(name))
    with pytest.raises(ValueError, match=f"{missing} is not installed: .*{advice}"):
        mlflow_logger(tracking_uri=uri)
    if missing != "mlflow":
        assert isinstance(mlflow_logger(tracking_uri="http://mlflow:5000"), MlflowLogger)  # a server needs neither


# --------------------------------------------------------------------------- hooks and conformance


def test_the_hook_returns_a_warning_logger() -> None:
    (callback,) = plugin.register_callbacks()
    assert type(callback) is Callback and callback.name == "mlflow" and callback.factory is mlflow_logger
    assert (callback.logger, callback.on_error, callback.all_ranks) == (True, "warn", False)


#: Every convention check mlrun has for this plugin's components (here: the parameters).
CHECKS = plugin_checks(plugin)


@pytest.mark.parametrize("check", CHECKS, ids=[check.id for check in CHECKS])
def test_conformance(check) -> None:
    check.run()


def test_conformance_skips_nothing() -> None:
    assert check_plugin(plugin).skipped == ()


def test_installed_distribution_declares_the_entry_point() -> None:
    try:
        dist = metadata.distribution("mlrun-mlflow")
    except metadata.PackageNotFoundError:
        pytest.skip("mlrun-mlflow is not installed (pip install -e plugins/mlrun-mlflow)")
    points = [(ep.name, ep.value) for ep in dist.entry_points if ep.group == "mlrun"]
    assert points == [("mlflow", "mlrun_mlflow.plugin")]
    requires = dist.requires or []
    assert any(r.startswith("torch-mlrun") for r in requires) and not any(r.startswith("mlrun") for r in requires)
