"""Resume honours what it is told; a run folder has one writer and an honest status (issue #10).

Most cases run the real command line, as a user would, on the generated synthetic dataset.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mlrun import checkpoint, engine
from mlrun.recipe import load_recipe
from mlrun.stopping import NonFiniteLoss

from conftest import QUIET, RECIPES, run_cli

SYNTHETIC = ["dataset.name=synthetic", "dataset.size=640", "train.batch_size=32"]


def train(registry, *overrides: str) -> Path:
    """Train the Summary recipe on synthetic data in-process; returns the run folder."""
    recipe = load_recipe(RECIPES / "summary.toml", registry, [*SYNTHETIC, "train.epochs=1", *overrides])
    return engine.run(recipe, **QUIET).folder.path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mlrun", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def status_of(folder: Path) -> dict:
    try:
        return json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def only_run(output_dir: Path = Path("runs")) -> Path:
    wait_for(lambda: output_dir.is_dir() and any(output_dir.iterdir()), "the run folder")
    (folder,) = [p for p in output_dir.iterdir() if p.is_dir()]
    return folder


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt", weights_only=True)


# ------------------------------------------------------------------ resume honours the user


@pytest.mark.slow
def test_a_forced_learning_rate_change_is_really_applied(registry, tmp_path: Path) -> None:
    folder = train(registry)
    unchanged = Path(shutil.copytree(folder, tmp_path / "unchanged"))
    result = run_cli("resume", str(folder), "train.epochs=2", "optimizer.lr=0.0001", "--force")
    assert result.returncode == 0, result.stderr
    assert run_cli("resume", str(unchanged), "train.epochs=2", "--force").returncode == 0
    saved = checkpoint.load(folder / "checkpoint.pt")
    assert saved["optimizer"]["param_groups"][0]["lr"] == 0.0001  # not the checkpoint's 0.01
    assert json.loads(saved["recipe"])["optimizer"]["lr"] == 0.0001
    a, b = weights(folder), weights(unchanged)
    assert any(not torch.equal(a[k], b[k]) for k in a), "the new learning rate changed nothing"


@pytest.mark.slow
def test_a_hand_edited_recipe_counts_as_a_change(registry) -> None:
    folder = train(registry)
    recipe = folder / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("lr = 0.01", "lr = 0.5"))
    before = snapshot(folder)
    result = run_cli("resume", str(folder))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "changed: optimizer.lr: 0.01 -> 0.5" in result.stderr and "--force" in result.stderr
    assert snapshot(folder) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("train.batch_size=16", "counted in batches"),
        ("model.name=sequential_log_softmax", "fit only the model"),
        ("dataset.size=320", "belong to the data"),
        ("train.seed=7", "data order"),
    ],
)
def test_changes_a_checkpoint_cannot_honour_are_refused_even_with_force(registry, override: str, reason: str) -> None:
    folder = train(registry)
    before = snapshot(folder)
    result = run_cli("resume", str(folder), override, "train.epochs=2", "--force")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot honour" in result.stderr and reason in result.stderr
    assert f"start a new run: mlrun {folder / 'recipe.toml'}" in result.stderr
    assert snapshot(folder) == before


@pytest.mark.slow
def test_fewer_epochs_than_already_trained_are_refused(registry) -> None:
    folder = train(registry, "train.epochs=2")
    result = run_cli("resume", str(folder), "train.epochs=1", "--force")
    assert result.returncode == 2 and "already trained 2 epochs" in result.stderr


@pytest.mark.slow
def test_data_that_changed_on_disk_is_refused_and_the_run_keeps_its_status(registry, tmp_path: Path) -> None:
    from idx import write_dataset

    root = write_dataset(tmp_path / "data", "FashionMNIST", train=320, test=64)
    recipe = load_recipe(RECIPES / "summary.toml", registry, [f"dataset.root={root}", "train.epochs=1"])
    folder = engine.run(recipe, **QUIET).folder.path
    write_dataset(root, "FashionMNIST", train=160, test=64)  # the user replaced the files
    result = run_cli("resume", str(folder), "train.epochs=2", "--force")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "now has 160 samples, but the checkpoint was taken with 320" in result.stderr
    assert status_of(folder)["status"] == "completed"


# ------------------------------------------------------------------ one writer, honest status


@pytest.mark.slow
def test_a_second_writer_is_refused_while_the_first_holds_the_folder(registry) -> None:
    folder = train(registry)
    first = start("resume", str(folder), "train.epochs=400", "--force")
    try:
        wait_for(lambda: status_of(folder).get("pid") == first.pid, "the first resume to start")
        before = {n: b for n, b in snapshot(folder).items() if n == "recipe.toml"}
        second = run_cli("resume", str(folder), "train.epochs=400", "--force")
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is being written by another mlrun process (pid {first.pid} on " in second.stderr
        assert {n: b for n, b in snapshot(folder).items() if n == "recipe.toml"} == before
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130
    assert status_of(folder)["status"] == "interrupted"


@pytest.mark.slow
def test_runs_tells_a_killed_run_from_a_live_one() -> None:
    proc = start(str(RECIPES / "summary.toml"), *SYNTHETIC, "train.epochs=400")
    folder = only_run()
    try:
        wait_for(lambda: status_of(folder).get("status") == "running", "the run to start")
        listing = run_cli("runs")
        assert f"{folder.name}  running" in listing.stdout, listing.stdout
    finally:
        proc.kill()
        proc.communicate()
    assert status_of(folder)["status"] == "running"  # what kill -9 leaves behind
    listing = run_cli("runs")
    assert f"{folder.name}  died" in listing.stdout, listing.stdout
    assert "ended without finishing" in listing.stdout and f"mlrun resume {folder}" in listing.stdout


@pytest.mark.slow
def test_sighup_stops_like_sigterm_with_a_checkpoint() -> None:
    proc = start(str(RECIPES / "summary.toml"), *SYNTHETIC, "train.epochs=400")
    folder = only_run()
    wait_for(lambda: (folder / "checkpoint.pt").exists(), "the first checkpoint")
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert "SIGHUP: stopped at epoch" in err and f"mlrun resume {folder}" in err
    assert status_of(folder)["status"] == "interrupted"


def test_an_interrupt_after_the_weights_are_written_keeps_the_run_completed(registry, monkeypatch) -> None:
    def interrupted_while_plotting(folder, echo):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_plot_metrics", interrupted_while_plotting)
    folder = train(registry)
    assert status_of(folder)["status"] == "completed"
    assert (folder / "model.pt").is_file()


@pytest.mark.slow
def test_closing_stdout_does_not_stop_the_run() -> None:
    proc = start(str(RECIPES / "summary.toml"), *SYNTHETIC, "train.epochs=3")
    assert proc.stdout is not None
    first_line = proc.stdout.readline()
    proc.stdout.close()  # like `mlrun RECIPE | head -1`
    _, err = proc.communicate(timeout=300)
    assert first_line.startswith("training classifier on synthetic")
    assert proc.returncode == 0, err
    folder = only_run()
    assert status_of(folder)["status"] == "completed"
    assert len(list(csv.DictReader((folder / "metrics.csv").open()))) == 3


@pytest.mark.slow
def test_resume_removes_temporary_files_a_kill_left_behind(registry) -> None:
    folder = train(registry)
    stale = folder / ".checkpoint.pt.k3j_x9q1.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert run_cli("resume", str(folder), "train.epochs=2", "--force").returncode == 0
    assert not stale.exists()


@pytest.mark.slow
def test_a_full_disk_is_named_with_the_right_epoch_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    disk = tmp_path / "tiny"
    disk.mkdir()
    # One checkpoint (~1.3 MB: weights and Adam's two moments) fits; a second, written
    # beside the first before replacing it, does not.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        result = run_cli(str(RECIPES / "summary.toml"), *SYNTHETIC, "train.epochs=3", f"train.output_dir={disk}")
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "could not save the checkpoint after epoch 2" in result.stderr
        assert "No space left on device" in result.stderr and "inline_container" not in result.stderr
        folder = only_run(disk)
        assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
        assert checkpoint.load(folder / "checkpoint.pt")["epoch"] == 2  # the first one, intact
        assert status_of(folder)["status"] == "failed"
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------------ files that lie, losses that explode


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model.pt", "checkpoint.pt"])
def test_a_flipped_byte_is_caught_by_the_checksum(registry, name: str) -> None:
    folder = train(registry)
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / name).write_bytes(bytes(data))
    command = ("evaluate", str(folder)) if name == "model.pt" else ("resume", str(folder))
    result = run_cli(*command)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{folder / name} is corrupt" in result.stderr


def test_a_nan_before_the_first_checkpoint_does_not_cite_one(registry, monkeypatch) -> None:
    real = torch.nn.functional.nll_loss
    steps = {"n": 0}

    def nan_at_step_3(*args, **kwargs):
        value = real(*args, **kwargs)
        if torch.is_grad_enabled():
            steps["n"] += 1
            if steps["n"] == 3:
                return value * float("nan")
        return value

    monkeypatch.setattr(torch.nn.functional, "nll_loss", nan_at_step_3)
    with pytest.raises(NonFiniteLoss) as info:
        train(registry)
    rendered = info.value.render()
    assert "no checkpoint was written yet" in rendered and "checkpoint.pt" not in rendered
    assert "recipe.toml optimizer.lr=0.001" in rendered


@pytest.mark.slow
def test_an_exploding_loss_is_reported_though_the_run_completes() -> None:
    result = run_cli(str(RECIPES / "summary.toml"), *SYNTHETIC, "train.epochs=1", "optimizer.lr=1e6")
    assert result.returncode == 0, result.stderr
    assert "warning: the training loss exploded" in result.stdout
    assert "exploded" in status_of(only_run())["warnings"][0]
