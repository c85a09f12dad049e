"""Distributed edge cases (issue #10): bad launch options, oversubscription, orphans, short failures, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlrun import distributed
from mlrun.cli import main
from mlrun.errors import UsageError

from conftest import RECIPES, run_cli

SYNTHETIC = ["dataset.name=synthetic", "dataset.size=200"]
LINUX = sys.platform.startswith("linux")


def synthetic_run(tmp_path: Path, *extra: str) -> list[str]:
    """``mlrun`` arguments training the Summary recipe on small generated data into tmp_path/runs."""
    return [str(RECIPES / "summary.toml"), *SYNTHETIC, f"train.output_dir={tmp_path / 'runs'}", *extra]


def fake_run_folder(tmp_path: Path, world_size: int | None) -> Path:
    """A run folder as a run with ``world_size`` processes leaves it (enough for the launcher)."""
    folder = tmp_path / "runs" / "summary-20261130-131159"
    folder.mkdir(parents=True)
    recipe = (RECIPES / "summary.toml").read_text()
    folder.joinpath("recipe.toml").write_text(recipe.replace('name = "fashion_mnist"', 'name = "synthetic"'))
    status = {"status": "interrupted", **({"distributed": {"world_size": world_size}} if world_size else {})}
    folder.joinpath("run.json").write_text(json.dumps(status))
    return folder


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--nproc", "0"], "--nproc must be at least 1, got 0"),
        (["--nproc=-3"], "--nproc must be at least 1, got -3"),
        (["--nproc", "2", "--max-restarts", "-5"], "--max-restarts must be 0 or more, got -5"),
    ],
)
def test_impossible_launch_options_are_refused_before_anything_runs(
    options: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*synthetic_run(tmp_path), *options]) == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_too_many_processes_warn_on_the_cpu_and_are_refused_on_cuda() -> None:
    warning = distributed.check_process_count(64, uses_cuda=False, cpus=2)
    assert warning is not None and "--nproc 64 is more than the 2 CPU cores" in warning
    assert "1 thread" in warning and "slower" in warning
    assert distributed.check_process_count(2, uses_cuda=False, cpus=2) is None
    assert distributed.check_process_count(2, uses_cuda=True, gpus=2) is None
    with pytest.raises(UsageError, match="each process needs its own GPU") as refused:
        distributed.check_process_count(4, uses_cuda=True, gpus=2)
    assert "use --nproc 2" in refused.value.problems


@pytest.mark.slow
def test_the_launcher_warns_about_oversubscription_then_launches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    launched: list[tuple[list[str], int]] = []
    monkeypatch.setattr(distributed, "cpu_count", lambda: 1)
    monkeypatch.setattr(distributed, "launch", lambda argv, nproc, *_, **__: launched.append((list(argv), nproc)) or 0)
    assert main([*synthetic_run(tmp_path), "train.device=cpu", "--nproc", "2"]) == 0
    assert "warning: --nproc 2 is more than the 1 CPU core here: each worker gets 1 thread" in capsys.readouterr().err
    assert launched and launched[0][1] == 2 and "--nproc" not in launched[0][0]


def test_resume_keeps_the_world_size_or_refuses() -> None:
    assert distributed.resume_world_size(2, None) == 2
    assert distributed.resume_world_size(None, None) == 1
    assert distributed.resume_world_size(None, 1) == 1
    with pytest.raises(UsageError, match="trained with 2 processes; resume with --nproc 2 "):
        distributed.resume_world_size(2, 1)
    with pytest.raises(UsageError, match="trained with 1 process; resume with one process"):
        distributed.resume_world_size(None, 2)


def test_resume_with_another_process_count_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = fake_run_folder(tmp_path, world_size=2)
    before = sorted(p.name for p in folder.iterdir())
    assert main(["resume", str(folder), "--nproc", "1"]) == 2
    err = capsys.readouterr().err
    assert "this run was trained with 2 processes; resume with --nproc 2" in err
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


@pytest.mark.parametrize(("world_size", "expected"), [(2, 2), (None, None)])
def test_resume_relaunches_with_the_runs_own_process_count(
    world_size: int | None, expected: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = fake_run_folder(tmp_path, world_size=world_size)
    launched: list[tuple[list[str], int]] = []
    monkeypatch.setattr(distributed, "launch", lambda argv, nproc, *_, **__: launched.append((list(argv), nproc)) or 0)
    monkeypatch.setattr("mlrun.cli._dispatch", lambda args: 0)  # the single-process path
    assert main(["resume", str(folder)]) == 0
    assert [nproc for _, nproc in launched] == ([expected] if expected else [])
    if expected:
        assert launched[0][0] == ["resume", str(folder)]


# --- Real jobs: two gloo workers on the CPU -------------------------------------------------


def start_job(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start a long 2-process job; returns the launcher and the files its stdout and stderr go to."""
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    command = [sys.executable, "-m", "mlrun", *synthetic_run(tmp_path, "train.epochs=1000", *extra), "--nproc", "2"]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        launcher = subprocess.Popen(command, stdout=stdout, stderr=stderr)
    return launcher, out, err


def children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, with their RANK."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == pid:
                    environ = (entry / "environ").read_bytes().split(b"\0")
                    rank = next((v[5:].decode() for v in environ if v.startswith(b"RANK=")), "?")
                    found[int(entry.name)] = rank
            except (OSError, IndexError, ValueError):
                continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def workers_training(launcher: subprocess.Popen[bytes], out: Path, timeout: float = 120) -> dict[int, str]:
    """Wait until both workers run and training has begun; returns their pids and ranks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert launcher.poll() is None, "the launcher ended early"
        workers = children(launcher.pid)
        if len(workers) == 2 and "epoch 2/" in out.read_text():
            return workers
        time.sleep(0.2)
    raise AssertionError("the workers did not start training in time")


def stop_all(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="workers die with their launcher through Linux's PR_SET_PDEATHSIG")
def test_killing_the_launcher_leaves_no_orphan_workers(tmp_path: Path) -> None:
    launcher, out, _ = start_job(tmp_path)
    workers: dict[int, str] = {}
    try:
        workers = workers_training(launcher, out)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if alive(pid)], "workers outlived their launcher"
    finally:
        stop_all([launcher.pid, *workers])


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="finds the workers through /proc")
def test_a_killed_worker_ends_the_job_with_one_short_line(tmp_path: Path) -> None:
    launcher, out, err = start_job(tmp_path)
    workers: dict[int, str] = {}
    try:
        workers = workers_training(launcher, out)
        (rank_one,) = [pid for pid, rank in workers.items() if rank == "1"]
        os.kill(rank_one, signal.SIGKILL)
        assert launcher.wait(timeout=60) == 1
    finally:
        stop_all([launcher.pid, *workers])
    stderr = err.read_text()
    assert "error: worker rank 1 died (signal SIGKILL)" in stderr
    assert "Traceback" not in stderr and "ChildFailedError" not in stderr
    (folder,) = (tmp_path / "runs").iterdir()  # the elastic pointer is gone with the job
    assert f"resume with `mlrun resume {folder}`" in stderr


@pytest.mark.slow
def test_resume_of_a_two_process_run_relaunches_two_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run_cli(*synthetic_run(tmp_path, "train.epochs=1"), "--nproc", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    assert main(["resume", str(folder), "--nproc", "1"]) == 2
    assert "resume with --nproc 2" in capsys.readouterr().err
    resumed = run_cli("resume", str(folder), "train.epochs=2", "--force", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "distributed: 2 processes" in resumed.stdout
    status = json.loads((folder / "run.json").read_text())
    assert status["distributed"]["world_size"] == 2 and status["status"] == "completed"


@pytest.mark.slow
def test_a_two_process_run_interrupted_mid_epoch_resumes_with_the_same_losses(tmp_path: Path) -> None:
    """Each rank's running loss is its own: a resume restores every rank's share, not rank 0's for all."""
    recipe = [str(RECIPES / "summary.toml"), "dataset.name=synthetic", "dataset.size=1280", "train.batch_size=32"]
    common = [*recipe, "train.epochs=3", "train.checkpoint_every_steps=3", "--nproc", "2"]
    reference = run_cli(*common, "train.output_dir=reference", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr

    job = subprocess.Popen(
        [sys.executable, "-m", "mlrun", *common, "train.output_dir=stopped"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    folders: list[Path] = []
    while time.monotonic() < deadline:
        folders = [p for p in (tmp_path / "stopped").glob("summary-*") if (p / "checkpoint.pt").is_file()]
        if folders and (folders[0] / "metrics.csv").is_file():  # an epoch done, the next one started
            break
        time.sleep(0.05)
    job.send_signal(signal.SIGINT)
    job.communicate(timeout=180)
    (folder,) = folders
    resumed = run_cli("resume", str(folder), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr

    def losses(run: Path) -> list[tuple[str, str]]:
        rows = (run / "metrics.csv").read_text().splitlines()[1:]
        return [tuple(row.split(",")[1:4:2]) for row in rows]  # train_loss, test_accuracy

    (expected,) = (tmp_path / "reference").glob("summary-*")
    assert losses(folder) == losses(expected)
