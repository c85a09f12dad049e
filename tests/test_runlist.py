"""Listing run folders: real runs, runs in progress, and folders broken in every way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlrun import engine, runlist
from mlrun.errors import UsageError
from mlrun.recipe import load_recipe

from conftest import QUIET

METRICS_HEADER = "epoch,train_loss,test_loss,test_accuracy,seconds\n"


def make_run(
    root: Path,
    name: str,
    status: object | None = None,
    accuracies: list[float] | None = None,
    epochs: int | None = None,
) -> Path:
    """A hand-made run folder; each file is written only when given."""
    folder = root / name
    folder.mkdir(parents=True)
    if status is not None:
        text = status if isinstance(status, str) else json.dumps(status)
        (folder / "run.json").write_text(text)
    if accuracies is not None:
        rows = [f"{i},0.5,0.6,{a},1.0\n" for i, a in enumerate(accuracies, start=1)]
        (folder / "metrics.csv").write_text(METRICS_HEADER + "".join(rows))
    if epochs is not None:
        (folder / "recipe.toml").write_text(f"[train]\nepochs = {epochs}\n")
    return folder


def test_a_real_run_is_listed(registry, small_recipe: Path) -> None:
    result = engine.run(load_recipe(small_recipe, registry, ["train.epochs=1", "train.batch_size=100"]), **QUIET)
    [summary] = runlist.list_runs(Path("runs"))
    assert summary.name == result.folder.path.name and summary.status == "completed"
    assert summary.recipe == str(small_recipe)
    assert (summary.epochs_done, summary.epochs_planned) == (1, 1)
    assert summary.final_accuracy == summary.best_accuracy == result.final_accuracy
    assert summary.problems == []
    table = runlist.format_runs([summary])
    assert table.splitlines()[0].split() == ["RUN", "STATUS", "RECIPE", "EPOCHS", "BEST_ACC", "FINAL_ACC"]
    assert table.splitlines()[1].split() == [
        summary.name,
        "completed",
        str(small_recipe),
        "1/1",
        f"{result.final_accuracy:.4f}",
        f"{result.final_accuracy:.4f}",
    ]


def test_best_and_final_accuracy_and_progress(tmp_path: Path) -> None:
    make_run(
        tmp_path,
        "summary-20261130-120000",
        {"status": "running", "recipe": "recipes/summary.toml"},
        [0.81, 0.86, 0.84],
        epochs=5,
    )
    [run] = runlist.list_runs(tmp_path)
    assert run.status == "running" and run.recipe == "recipes/summary.toml"
    assert (run.epochs_done, run.epochs_planned) == (3, 5)
    assert (run.best_accuracy, run.final_accuracy) == (0.86, 0.84)
    row = runlist.format_runs([run]).splitlines()[1].split()
    assert row[3:] == ["3/5", "0.8600", "0.8400"]


def test_broken_and_partial_folders_are_listed_not_fatal(tmp_path: Path) -> None:
    make_run(tmp_path, "a-20261130-100000", "{not json", [0.5])
    make_run(tmp_path, "b-20261130-100001", None, [0.6, 0.7])  # run.json lost
    make_run(tmp_path, "c-20261130-100002")  # created, then the process died
    make_run(tmp_path, "d-20261130-100003", ["a", "list"])
    make_run(tmp_path, "e-20261130-100004", {"status": "failed", "recipe": "r.toml"}, None, epochs=2)
    torn = make_run(tmp_path, "f-20261130-100005", {"status": "completed"})
    (torn / "metrics.csv").write_text(METRICS_HEADER + "1,0.5,0.6,0.9,1.0\n2,0.4,0.5,oops,1.0\n")
    (tmp_path / "f-20261130-100006").mkdir()
    (tmp_path / "f-20261130-100006" / "recipe.toml").write_text("not = [toml")
    (tmp_path / "notes").mkdir()  # no run's name, no run's files: not a run
    (tmp_path / "README.txt").write_text("a file")
    (tmp_path / ".x-20261130-100007").mkdir()  # hidden

    runs = {r.name: r for r in runlist.list_runs(tmp_path)}
    assert sorted(runs) == [
        "a-20261130-100000",
        "b-20261130-100001",
        "c-20261130-100002",
        "d-20261130-100003",
        "e-20261130-100004",
        "f-20261130-100005",
        "f-20261130-100006",
    ]
    for name in (
        "a-20261130-100000",
        "b-20261130-100001",
        "c-20261130-100002",
        "d-20261130-100003",
        "f-20261130-100006",
    ):
        assert runs[name].status == runlist.UNREADABLE
    assert "run.json: invalid JSON (line 1" in runs["a-20261130-100000"].problems[0]
    assert runs["a-20261130-100000"].final_accuracy == 0.5  # the metrics still count
    assert runs["b-20261130-100001"].problems == ["run.json missing"]
    assert (runs["b-20261130-100001"].epochs_done, runs["b-20261130-100001"].best_accuracy) == (2, 0.7)
    assert runs["c-20261130-100002"].epochs_done == 0 and runs["c-20261130-100002"].final_accuracy is None
    assert runs["d-20261130-100003"].problems == ["run.json: no status field"]
    failed = runs["e-20261130-100004"]
    assert (failed.status, failed.epochs_done, failed.epochs_planned, failed.problems) == ("failed", 0, 2, [])
    torn_run = runs["f-20261130-100005"]
    assert torn_run.status == "completed" and torn_run.final_accuracy == 0.9 and torn_run.epochs_done == 1
    assert torn_run.problems == ["metrics.csv: line 3 has no numeric test_accuracy"]
    assert runs["f-20261130-100006"].epochs_planned is None

    table = runlist.format_runs(list(runs.values()))
    assert "e-20261130-100004  failed" in table
    assert "notes:" in table and "  b-20261130-100001: run.json missing" in table
    failed_row = next(line for line in table.splitlines() if line.startswith("e-"))
    assert failed_row.split()[-3:] == ["0/2", "-", "-"]


def test_final_metrics_in_run_json_stand_in_for_a_lost_metrics_csv(tmp_path: Path) -> None:
    make_run(tmp_path, "s-20261130-100000", {"status": "completed", "final": {"epoch": 5, "test_accuracy": 0.88}})
    [run] = runlist.list_runs(tmp_path)
    assert (run.epochs_done, run.best_accuracy, run.final_accuracy) == (5, 0.88, 0.88)


def test_runs_are_listed_oldest_first(tmp_path: Path) -> None:
    for name in ("zeta-20261130-090000", "alpha-20261130-110000", "alpha-20261130-090000-1", "alpha-20261130-090000"):
        make_run(tmp_path, name, {"status": "completed"})
    assert [r.name for r in runlist.list_runs(tmp_path)] == [
        "alpha-20261130-090000",
        "zeta-20261130-090000",
        "alpha-20261130-090000-1",
        "alpha-20261130-110000",
    ]


def test_no_runs_and_bad_folders(tmp_path: Path) -> None:
    assert runlist.list_runs(tmp_path) == []
    assert runlist.format_runs([]) == "no runs found"
    with pytest.raises(UsageError, match=f"{tmp_path / 'runs'}: no such folder"):
        runlist.list_runs(tmp_path / "runs")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        runlist.list_runs(tmp_path / "file")


def test_run_status_reads_old_partial_and_hand_edited_run_json() -> None:
    from mlrun.runs import RunStatus

    old = RunStatus.from_json('{"status": "completed", "recipe": "r.toml", "final": {"test_accuracy": 0.9}}')
    assert (old.status, old.recipe, old.final, old.pid, old.resumed) == (
        "completed",
        "r.toml",
        {"test_accuracy": 0.9},
        None,
        [],
    )
    odd = RunStatus.from_json('{"status": 3, "pid": true, "warnings": "x", "later_field": {"a": 1}}')
    assert (odd.status, odd.pid, odd.warnings) == (None, None, [])  # wrong types read as unset
    assert odd.to_dict() == {"later_field": {"a": 1}}  # unknown fields are kept and written back
    assert RunStatus.from_json("[1, 2]") == RunStatus()
    full = RunStatus(status="running", pid=7, host="h", versions={"torch": "2"}, resumed=["t"])
    assert RunStatus.from_json(full.to_json()) == full
    assert "error" not in full.to_dict() and "warnings" not in full.to_dict()
