"""Data-parallel training through torch.distributed (gloo on the CPU), launched by torchrun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from plugin_fakes import install_fake

RANK_ONE_FAILS = """
import os
from torch import nn
from mlrun import Criterion, hookimpl

class FailsOnRankOne(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.loss = nn.NLLLoss()

    def forward(self, output, labels):
        self.calls += 1
        if os.environ.get("RANK") == "1" and self.calls == 5:
            raise RuntimeError("rank one gives up")
        return self.loss(output, labels)

@hookimpl
def register_criteria():
    return [Criterion("fails_on_rank_one", FailsOnRankOne, "test loss", expects=("log_probs",))]
"""


def read_status(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


@pytest.mark.slow
def test_two_processes_train_in_sync(small_recipe: Path, tmp_path: Path) -> None:
    single = run_cli(str(small_recipe), "train.epochs=2", "train.run_name=single", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    double = run_cli(str(small_recipe), "--nproc", "2", "train.epochs=2", "train.run_name=double", cwd=tmp_path)
    assert double.returncode == 0, double.stderr
    assert "distributed: 2 processes (gloo); batch size 32 per process, 64 in all" in double.stdout
    assert double.stdout.count("epoch 2/2") == 1  # rank 0 alone prints
    folders = sorted(p.name.split("-")[0] for p in (tmp_path / "runs").iterdir())
    assert folders == ["double", "single"]  # rank 0 alone wrote a run folder
    (folder,) = (tmp_path / "runs").glob("double-*")
    status = read_status(folder)
    dist = status["distributed"]
    assert dist["world_size"] == 2 and dist["ranks_in_sync"] is True
    assert len(dist["rank_weights_sha256"]) == 2 and len(set(dist["rank_weights_sha256"])) == 1
    (alone,) = (tmp_path / "runs").glob("single-*")
    assert abs(status["final"]["test_accuracy"] - read_status(alone)["final"]["test_accuracy"]) <= 0.05


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_its_error(
    small_recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_fake(site, "mlrun-fake-failing", RANK_ONE_FAILS)
    env = {"PYTHONPATH": str(site), "MLRUN_DISABLE_PLUGIN_AUTOLOAD": "", "MLRUN_PLUGINS": "mlrun_fake_failing"}
    result = run_cli(str(small_recipe), "--nproc", "2", "criterion.name=fails_on_rank_one", "train.dist_timeout_s=30",
                     env=env, cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert "[rank 1] error: training failed in epoch 1: RuntimeError: rank one gives up" in result.stderr


def test_bad_input_is_reported_once_before_any_worker_starts(small_recipe: Path, tmp_path: Path) -> None:
    result = run_cli(str(small_recipe), "--nproc", "2", "optimizer.lr=-1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("optimizer.lr: must be greater than 0") == 1
    assert "[rank" not in result.stderr and not (tmp_path / "runs").exists()


FAILS_ONCE_IN_EPOCH_2 = """
import os
from torch import nn
from mlrun import Criterion, hookimpl

class FailsOnce(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.loss = nn.NLLLoss()

    def forward(self, output, labels):
        if output.requires_grad:
            self.calls += 1
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first_attempt and os.environ.get("RANK") == "1" and self.calls == 15:  # epoch 2 (10 steps each)
            raise RuntimeError("transient failure")
        return self.loss(output, labels)

@hookimpl
def register_criteria():
    return [Criterion("fails_once", FailsOnce, "test loss", expects=("log_probs",))]
"""


@pytest.mark.slow
def test_elastic_restart_resumes_from_the_latest_checkpoint(small_recipe: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_fake(site, "mlrun-fake-flaky", FAILS_ONCE_IN_EPOCH_2)
    env = {"PYTHONPATH": str(site), "MLRUN_DISABLE_PLUGIN_AUTOLOAD": "", "MLRUN_PLUGINS": "mlrun_fake_flaky"}
    for _attempt in range(3):
        result = run_cli(str(small_recipe), "--nproc", "2", "--max-restarts", "1", "criterion.name=fails_once",
                         "train.epochs=3", "train.dist_timeout_s=30", env=env, cwd=tmp_path)  # fmt: skip
        # About one job in eight, a restarted gloo worker aborts in torch's C++ code
        # ("terminate called without an active exception", exit code -6). Only that
        # upstream crash is retried, with a fresh folder; any other failure fails the test.
        if result.returncode == 0 or "terminate called without an active exception" not in result.stderr:
            break
        shutil.rmtree(tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    assert "[rank 1] error: training failed in epoch 2: RuntimeError: transient failure" in result.stderr
    assert "resuming at epoch 2, step 0" in result.stdout
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    status = read_status(folder)
    assert status["status"] == "completed" and status["distributed"]["ranks_in_sync"] is True
    assert [int(line.split(",")[0]) for line in (folder / "metrics.csv").read_text().splitlines()[1:]] == [1, 2, 3]
    assert not list((tmp_path / "runs").glob(".elastic-*"))  # cleaned up once the job completed
