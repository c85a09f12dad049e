"""The example callback package (plugins/mlrun-mlflow): real runs logged into a real MLflow store.

Each run is read back through MLflow's own client and compared with its run folder
(``recipe.toml``, ``metrics.csv``, ``steps.csv``). The package is used as `make test`
installs it; where it is not installed, it is made visible from its source (a dist-info
with its entry point on the path, like the ``site`` fixture's fake plugins), so these
tests never install anything into the environment they run in.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch.nn.functional as F

import mlrun
from mlrun import checkpoint, engine
from mlrun.errors import MlrunError
from mlrun.recipe import load_recipe
from mlrun.runs import RunFolder

from conftest import QUIET, RECIPES, REPO, interrupted_at, pip_install_editable, run_cli

if TYPE_CHECKING:
    from mlrun.registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PLUGIN = REPO / "plugins" / "mlrun-mlflow"
SUMMARY = RECIPES / "summary.toml"
#: 320 samples, a fifth held out for validation: 8 steps an epoch.
SYNTHETIC = ["dataset.name=synthetic", "dataset.size=320", "train.batch_size=32", "train.threads=1"]
VALIDATED = ["train.val_fraction=0.2", "train.monitor=val.accuracy"]
#: Refused at once, never retried: an unreachable server costs the run no time.
NO_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def mlflow_callback(**settings: Any) -> str:
    """The recipe override adding the mlflow callback with these settings."""
    return "callbacks=[{" + ", ".join(['name="mlflow"', *(f"{k}={json.dumps(v)}" for k, v in settings.items())]) + "}]"


@pytest.fixture
def plugin(site: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """The registry with mlrun-mlflow loaded (and only it), as installed or from its source."""
    for module in ("mlflow", "sqlalchemy", "alembic"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is not installed: `make test` installs plugins/mlrun-mlflow and its dependencies")
    try:
        metadata.distribution("mlrun-mlflow")
    except metadata.PackageNotFoundError:
        source = str(PLUGIN / "src")
        monkeypatch.syspath_prepend(source)
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([source, os.environ["PYTHONPATH"]]))
        info = site / "mlrun_mlflow-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlrun-mlflow\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text("[mlrun]\nmlflow = mlrun_mlflow.plugin\n")
    monkeypatch.setenv("MLRUN_PLUGINS", "mlflow")
    return mlrun.default_registry()


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns.db'}"


def client(store: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(store)


def history(store: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client(store).get_metric_history(run_id, key))


def train(registry: Registry, *overrides: str) -> engine.RunResult:
    return engine.run(load_recipe(SUMMARY, registry, [*SYNTHETIC, *overrides]), **QUIET)


def recipe_leaves(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every setting of a recipe, keyed as an override names it (``transforms.1.mean``)."""
    leaves: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            leaves.update(recipe_leaves(value, f"{prefix}{key}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, item in enumerate(value):
                leaves.update(recipe_leaves(item, f"{prefix}{key}.{index}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def run_id_of(folder: Path) -> str:
    """The MLflow run id the mlflow callback (the recipe's first) saved in the run's checkpoint."""
    return checkpoint.load(folder / "checkpoint.pt")["callbacks"]["0.mlflow"]["run_id"]


# ------------------------------------------------------------------ the package, as mlrun sees it


def test_list_shows_the_callback_and_listing_does_not_import_mlflow(plugin) -> None:
    result = run_cli("list", "callback")
    assert result.returncode == 0, result.stderr
    assert re.search(r"callback\s+mlflow\s+mlrun-mlflow==0\.1\.0", result.stdout), result.stdout
    code = "import sys, mlrun; mlrun.default_registry().get('callback', 'mlflow'); print(sorted(m for m in sys.modules if m.startswith('mlflow')))"
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert listed.stdout.strip() == "[]", listed.stderr


def test_its_settings_are_checked_like_any_component(plugin, tmp_path: Path) -> None:
    with pytest.raises(MlrunError) as caught:
        load_recipe(SUMMARY, plugin, [*SYNTHETIC, 'callbacks=[{name="mlflow", log_every_step=5, experiment=""}]'])
    message = caught.value.render()
    assert "callbacks.0.log_every_step" in message and "log_every_steps" in message
    assert "callbacks.0.experiment" in message


def test_a_missing_package_stops_the_run_before_it_trains(plugin, monkeypatch) -> None:
    module = importlib.import_module("mlrun_mlflow.plugin")
    real = module.importlib.util.find_spec
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None if name == "sqlalchemy" else real(name))
    with pytest.raises(MlrunError) as caught:
        train(plugin, "train.epochs=1", mlflow_callback())
    message = caught.value.render()
    assert "callback 'mlflow'" in message and "sqlalchemy is not installed" in message, message
    assert "pip install sqlalchemy alembic" in message
    assert not list(Path("runs").glob("*/metrics.csv"))


# ------------------------------------------------------------------ a run, read back through MLflow


def test_a_run_is_logged_as_its_run_folder_says(plugin, store: str) -> None:
    logged_every_4 = mlflow_callback(tracking_uri=store, log_every_steps=4)
    folder = train(plugin, "train.epochs=2", *VALIDATED, logged_every_4).folder.path
    run = client(store).get_run(run_id_of(folder))
    assert run.info.status == "FINISHED" and run.info.run_name == folder.name
    assert client(store).get_experiment(run.info.experiment_id).name == "mlrun"

    # params: every setting of recipe.toml, written as an override writes it
    recipe = recipe_leaves(tomllib.loads((folder / "recipe.toml").read_text()))
    assert set(run.data.params) == set(recipe)
    for key, value in recipe.items():
        logged = run.data.params[key]
        assert (logged if isinstance(value, str) else tomllib.loads(f"v = {logged}")["v"]) == value, key
    assert run.data.params["transforms.1.name"] == "normalize" and run.data.params["optimizer.lr"] == "0.01"

    # metrics: each column of metrics.csv at step = the epoch; the step losses of steps.csv
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    columns = [c for c in rows[0] if c != "epoch"]
    assert {"train_loss", "val_loss", "val_accuracy", "lr", "seconds"} <= set(columns)
    for column in columns:
        expected = [(int(row["epoch"]), pytest.approx(float(row[column]), rel=1e-5, abs=1e-6)) for row in rows]
        assert history(store, run.info.run_id, column) == expected, column
    steps = list(csv.DictReader((folder / "steps.csv").open()))
    per_epoch = len(steps) // 2
    expected = [((int(r["epoch"]) - 1) * per_epoch + int(r["step"]), float(r["train_loss"])) for r in steps]
    assert history(store, run.info.run_id, "step_loss") == [(s, loss) for s, loss in expected if s % 4 == 0]

    # tags and artefacts
    selection = json.loads((folder / "run.json").read_text())["selection"]
    tags = run.data.tags
    assert tags["mlrun.status"] == "completed" and tags["mlrun.run_dir"] == str(folder.resolve())
    assert (tags["mlrun.best.monitor"], tags["mlrun.best.epoch"]) == ("val.accuracy", str(selection["best_epoch"]))
    artefacts = {a.path for a in client(store).list_artifacts(run.info.run_id)}
    assert {"recipe.toml", "metrics.csv", "steps.csv", "best.pt", "model.pt"} <= artefacts
    logged = client(store).download_artifacts(run.info.run_id, "metrics.csv", str(folder.parent / "download"))
    assert Path(logged).read_bytes() == (folder / "metrics.csv").read_bytes()


def test_the_plot_is_logged_too(plugin, store: str) -> None:
    folder = train(plugin, "train.epochs=1", mlflow_callback(tracking_uri=store)).folder.path
    assert "metrics.png" in {a.path for a in client(store).list_artifacts(run_id_of(folder))}


def test_an_unreachable_tracking_server_warns_once_and_the_run_completes(plugin, capsys, monkeypatch) -> None:
    for name, value in NO_RETRIES.items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    result = train(plugin, "train.epochs=2", mlflow_callback(tracking_uri="http://127.0.0.1:9", log_every_steps=1))
    assert time.monotonic() - started < 60
    status = json.loads((result.folder.path / "run.json").read_text())
    assert status["status"] == "completed" and result.final_accuracy > 0.5
    (warned,) = status["callback_warnings"]
    where = (warned["callback"], warned["plugin"], warned["event"], warned["count"])
    assert where == ("mlflow", "mlrun-mlflow==0.1.0", "on_fit_start", 1)
    assert "cannot log to MLflow at 'http://127.0.0.1:9'" in warned["error"] and "Connection refused" in warned["error"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "mlflow" in line.lower()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: callback 'mlflow'"), warnings


def test_a_resumed_run_goes_on_in_the_same_mlflow_run(plugin, store: str, tmp_path: Path, monkeypatch) -> None:
    """Interrupted mid-epoch, resumed: one MLflow run, every point once, the same as an uninterrupted run."""
    logged = mlflow_callback(tracking_uri=store, log_every_steps=3)
    overrides = ["train.epochs=3", "train.checkpoint_every_steps=4", logged]
    reference = train(plugin, *overrides, f"train.output_dir={tmp_path / 'reference'}").folder.path

    # batch 26: the last checkpoint is at batch 24 (epoch 3, batch 4)
    with interrupted_at(F, "nll_loss", 26, counts=F.torch.is_grad_enabled), pytest.raises(KeyboardInterrupt):
        train(plugin, *overrides)
    (folder,) = Path("runs").iterdir()
    interrupted = run_id_of(folder)
    assert client(store).get_run(interrupted).info.status == "KILLED"
    engine.run(load_recipe(folder / "recipe.toml", plugin), resume=RunFolder(folder), **QUIET)

    assert run_id_of(folder) == interrupted
    resumed, whole = client(store).get_run(interrupted), client(store).get_run(run_id_of(reference))
    assert resumed.info.status == "FINISHED" and resumed.data.tags["mlrun.status"] == "completed"
    assert len(client(store).search_runs([resumed.info.experiment_id])) == 2  # the reference and this one
    assert set(resumed.data.metrics) == set(whole.data.metrics)
    for key in sorted(set(whole.data.metrics) - {"seconds"}):  # bitwise resume: the very same values
        assert history(store, interrupted, key) == history(store, whole.info.run_id, key), key
    assert [step for step, _ in history(store, interrupted, "step_loss")] == list(range(3, 31, 3))
    assert [step for step, _ in history(store, interrupted, "train_loss")] == [1, 2, 3]


# ------------------------------------------------------------------ as a user runs it


@pytest.mark.slow
def test_the_default_store_is_a_sqlite_database_in_the_working_folder_and_stdout_stays_the_run_log(
    plugin, tmp_path: Path
) -> None:
    result = run_cli(str(SUMMARY), *SYNTHETIC, "train.epochs=1", mlflow_callback(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mlruns.db").is_file()
    assert not re.search(r"mlflow|alembic|INFO", result.stdout, re.IGNORECASE), result.stdout
    assert not re.search(r"INFO|warning", result.stderr), result.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    run = client(f"sqlite:///{tmp_path / 'mlruns.db'}").get_run(run_id_of(folder))
    assert run.info.status == "FINISHED" and run.info.run_name == folder.name
    assert (tmp_path / "mlruns").is_dir()  # the artefacts, next to the database


@pytest.mark.slow
def test_pip_installs_it_as_a_plugin(plugin_venv: Path, tmp_path: Path) -> None:
    pip_install_editable(plugin_venv, PLUGIN)
    env = {**os.environ, "MLRUN_DISABLE_PLUGIN_AUTOLOAD": "", "MLRUN_PLUGINS": "mlflow"}
    result = subprocess.run(
        [str(plugin_venv), "-m", "mlrun", "plugins"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    line = next((l for l in result.stdout.splitlines() if l.startswith("mlflow ")), result.stdout + result.stderr)
    assert line.split()[:2] == ["mlflow", "mlrun-mlflow==0.1.0"] and line.endswith("ok"), line
