"""``mlrun sweep``: refusals before any trial, the same table with 1 or 2 workers, kill -9 and resume, pruning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlrun.cli import main
from mlrun.errors import UsageError
from mlrun.sweep.check import check_workers, prepare
from mlrun.sweep.space import split_overrides
from mlrun.sweep.table import format_sweep

from conftest import write_recipe
from idx import write_dataset

RECIPE = """\
[dataset]
name = "fashion_mnist"
root = "{root}"

[[transforms]]
name = "to_tensor"

[model]
name = "mlp"
hidden_sizes = [32]

[criterion]
name = "cross_entropy"

[optimizer]
name = "adam"
lr = 0.01

[train]
epochs = {epochs}
batch_size = 16
val_fraction = 0.25
monitor = "val.loss"
"""
GRID = ["optimizer.lr=0.01,0.0003", "model.dropout=0.0,0.3"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("sweepdata"), "FashionMNIST", train=1200, test=100)


@pytest.fixture
def recipe(tmp_path: Path, data_root: Path) -> Path:
    return write_recipe(tmp_path / "small.toml", RECIPE.format(root=data_root, epochs=4))


def sweep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlrun", "sweep", *args], capture_output=True, text=True, timeout=600
    )  # fmt: skip


def table(folder: Path) -> list[str]:
    """The trials table without its RUN column (run folder names hold their start time)."""
    lines = format_sweep(folder).splitlines()[1:]
    return [line.rsplit("  ", 1)[0].rstrip() for line in lines]


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["sweep", *args]) == 2
    assert not Path("sweeps").exists() and not Path("out").exists()  # nothing written
    return capsys.readouterr().err


# --------------------------------------------------------------------------- refused up front


def test_the_grid_shorthand_splits_values_outside_brackets() -> None:
    plain, dims = split_overrides(["train.epochs=2", "model.hidden_sizes=[64, 32],[16]", "optimizer.lr=0.1,0.01"])
    assert plain == ["train.epochs=2"]
    assert [(d.key, d.values) for d in dims] == [
        ("model.hidden_sizes", [[64, 32], [16]]),
        ("optimizer.lr", [0.1, 0.01]),
    ]


def test_an_unknown_key_in_the_space_is_refused(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, str(recipe), "optimizer.lrr=0.1,0.01", "--dir", "out")
    assert "optimizer.lrr" in err and "did you mean 'lr'" in err and "nothing was run" in err


def test_a_value_outside_a_parameters_bounds_is_refused_before_any_trial(
    tmp_path: Path, recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = recipe.read_text() + '\n[sweep]\ntrials = 3\nsampler = "random"\n[sweep.space]\n'
    text += '"model.dropout" = { uniform = [0.0, 1.0] }\n"optimizer.lr" = { log_uniform = [0.001, 0.01] }\n'
    path = write_recipe(tmp_path / "bounds.toml", text)
    err = refused(capsys, str(path), "--dir", "out")
    assert "sweep.space.model.dropout.uniform: model.dropout = 1.0 is refused" in err
    assert "optimizer.lr" not in err  # a range inside the bounds passes


def test_a_grid_on_a_continuous_range_is_refused(
    tmp_path: Path, recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        recipe.read_text()
        + '\n[sweep]\nsampler = "grid"\n[sweep.space]\n"optimizer.lr" = { log_uniform = [0.001, 0.01] }\n'
    )
    err = refused(capsys, str(write_recipe(tmp_path / "g.toml", text)), "--dir", "out")
    assert "sweep.space.optimizer.lr.log_uniform: a grid cannot enumerate a continuous log_uniform range" in err
    assert "choice = [...]" in err


def test_sweep_section_errors_name_their_key_paths(
    tmp_path: Path, recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = recipe.read_text() + (
        '\n[sweep]\ntrails = 3\nsampler = "bayes"\npruner = "hyperband"\n'
        '[sweep.space]\n"optimizer.lr" = { loguniform = [0.001, 0.01] }\n"model.dropout" = { uniform = [0.5, 0.1] }\n'
    )
    err = refused(capsys, str(write_recipe(tmp_path / "s.toml", text)), "--dir", "out")
    assert "sweep.trails: unknown setting — did you mean 'trials'?" in err
    assert "sweep.sampler: must be one of grid, random, tpe" in err
    assert "sweep.pruner: must be one of median, none" in err
    assert "sweep.space.optimizer.lr.loguniform: unknown distribution — did you mean 'log_uniform'?" in err
    assert "sweep.space.model.dropout.uniform: expected [low, high] with low < high" in err


def test_a_test_split_objective_is_refused_unless_acknowledged(
    tmp_path: Path, data_root: Path, registry, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        RECIPE.format(root=data_root, epochs=1)
        .replace("val_fraction = 0.25\n", "")
        .replace('monitor = "val.loss"\n', "")
    )
    path = write_recipe(tmp_path / "t.toml", text)
    err = refused(capsys, str(path), "optimizer.lr=0.1,0.01", "--dir", "out")
    assert "sweep.objective: missing, and the recipe has no train.monitor" in err
    text += '\n[sweep]\nobjective = "test.accuracy"\n'
    path = write_recipe(tmp_path / "t.toml", text)
    err = refused(capsys, str(path), "optimizer.lr=0.1,0.01", "--dir", "out")
    assert "test.accuracy is a test-split figure" in err and "allow_test_objective" in err
    acknowledged = prepare(path, ["optimizer.lr=0.1,0.01"], registry, allow_test=True)
    assert (acknowledged.objective, acknowledged.direction) == ("test.accuracy", "maximize")


def test_the_direction_comes_from_the_metric(recipe: Path, registry) -> None:
    assert prepare(recipe, GRID, registry).direction == "minimize"
    accurate = prepare(recipe, [*GRID, "train.monitor=val.accuracy"], registry)
    assert (accurate.objective, accurate.direction) == ("val.accuracy", "maximize")


def test_an_unreachable_storage_is_refused_before_any_trial(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, str(recipe), *GRID, "--dir", "out", "--storage", "postgresql://me:secret@127.0.0.1:1/optuna")
    assert "--storage postgresql://me:***@127.0.0.1:1/optuna: cannot be reached" in err and "secret" not in err


def test_check_validates_a_recipes_sweep_section(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_recipe(
        Path("good.toml"),
        recipe.read_text() + '[sweep]\ntrials = 4\n[sweep.space]\n"optimizer.lr" = { log_uniform = [0.001, 0.1] }\n',
    )
    assert main(["check", str(good)]) == 0
    assert "# [sweep]: OK: " in capsys.readouterr().out
    bad = write_recipe(
        Path("bad.toml"),
        recipe.read_text() + '[sweep]\ntrials = 4\n[sweep.space]\n"model.dropout" = { uniform = [0.0, 1.5] }\n',
    )
    assert main(["check", str(bad)]) == 2
    assert "sweep.space.model.dropout.uniform: model.dropout = 1.5 is refused" in capsys.readouterr().err


def test_workers_must_not_oversubscribe_the_cores() -> None:
    check_workers(2, 1, cores=2)
    with pytest.raises(UsageError, match="3 threads on 2 CPU cores.*--workers 2"):
        check_workers(3, 1, cores=2)
    with pytest.raises(UsageError, match="--workers 1"):
        check_workers(2, 2, cores=2)


# --------------------------------------------------------------------------- sweeps that run


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> list[str]:
    """The table of an uninterrupted 4-trial grid sweep with one worker."""
    folder = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(folder / "small.toml", RECIPE.format(root=data_root, epochs=4))
    done = sweep(str(recipe), *GRID, "--dir", str(folder / "sweep"))
    assert done.returncode == 0, done.stderr
    assert (folder / "sweep" / "sweep.png").stat().st_size > 0
    return table(folder / "sweep")


@pytest.mark.slow
def test_two_workers_give_the_same_table_as_one(
    recipe: Path, reference: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert [line.split()[1] for line in reference[1:]] == ["complete"] * 4
    assert len({line.split()[-1] for line in reference[1:]}) > 1  # the values differ: the order means something
    done = sweep(str(recipe), *GRID, "--dir", "two", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert table(Path("two")) == reference
    assert main(["runs", "two"]) == 0  # mlrun runs SWEEP_DIR prints the same table
    assert capsys.readouterr().out.splitlines()[1].startswith("TRIAL  STATE     optimizer.lr  model.dropout  EPOCHS")


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_same_table_without_running_a_trial_twice(
    recipe: Path, reference: list[str]
) -> None:
    process = subprocess.Popen([sys.executable, "-m", "mlrun", "sweep", str(recipe), *GRID, "--dir", "killed"])
    deadline = time.monotonic() + 300
    while not list(Path("killed").glob("trial-0001-*/checkpoint.pt")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)  # the trial process stops with it, at a checkpoint
    process.wait()
    time.sleep(1)
    resumed = sweep("--resume", "killed")
    assert resumed.returncode == 0, resumed.stderr
    assert table(Path("killed")) == reference
    folders = sorted(p.name.rsplit("-", 2)[0] for p in Path("killed").glob("trial-*") if p.is_dir())
    assert folders == ["trial-0000", "trial-0001", "trial-0002", "trial-0003"]  # one run folder each
    assert "trial 1: resuming trial-0001-" in resumed.stdout  # from its own checkpoint
    assert "trial 0:" not in resumed.stdout  # the finished trial was kept, not run again


@pytest.mark.slow
def test_pruning_stops_a_hopeless_trial_early(recipe: Path) -> None:
    text = recipe.read_text().replace("epochs = 4", "epochs = 6")
    text += '\n[sweep]\npruner = "median"\nprune_warmup_epochs = 0\nprune_startup_trials = 2\n'
    path = write_recipe(Path("prune.toml"), text)
    done = sweep(str(path), "optimizer.lr=0.01,0.003,0.0000001", "--dir", "pruned")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in table(Path("pruned"))[1:]}
    assert rows["0"][1] == rows["1"][1] == "complete" and rows["0"][3] == "6"
    assert rows["2"][1] == "pruned" and int(rows["2"][3]) < 6


@pytest.mark.slow
def test_two_machines_share_one_study_through_a_storage_url(recipe: Path, reference: list[str]) -> None:
    """Two sweep processes with their own folders join one study in a database: each grid point runs once."""
    storage = f"sqlite:///{Path('shared.db').resolve()}"
    args = [sys.executable, "-m", "mlrun", "sweep", str(recipe), *GRID, "--storage", storage, "--study", "shared"]
    first = subprocess.Popen([*args, "--dir", "machine-a"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not list(Path("machine-a").glob("trial-*")):  # machine A has created the study and queued the grid
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = sweep(str(recipe), *GRID, "--storage", storage, "--study", "shared", "--dir", "machine-b")
    assert first.wait(timeout=600) == 0 and second.returncode == 0, (first.communicate(), second.stderr)
    ran = [
        sorted(p.name.rsplit("-", 2)[0] for p in Path(m).glob("trial-*") if p.is_dir())
        for m in ("machine-a", "machine-b")
    ]
    assert sorted(ran[0] + ran[1]) == ["trial-0000", "trial-0001", "trial-0002", "trial-0003"]  # none twice
    assert table(Path("machine-a")) == table(Path("machine-b")) == reference  # every machine sees every trial
