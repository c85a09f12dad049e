"""The training loop users expect: accumulation, clipping, bf16 — each exact across resume (issue #13)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mlrun import checkpoint, engine
from mlrun.recipe import load_recipe
from mlrun.runs import RunFolder

from conftest import QUIET, RECIPES, interrupted_at, run_cli

SYNTHETIC = ["dataset.name=synthetic", "dataset.size=320", "train.batch_size=32"]  # 10 batches per epoch


def train(registry, *overrides: str, output: str = "runs") -> engine.RunResult:
    recipe = load_recipe(RECIPES / "summary.toml", registry, [*SYNTHETIC, f"train.output_dir={output}", *overrides])
    return engine.run(recipe, **QUIET)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt", weights_only=True)


def steps(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "steps.csv").open()))


def test_accumulation_takes_one_optimizer_step_per_window(registry) -> None:
    result = train(registry, "train.epochs=2", "train.accumulate_steps=3")
    saved = checkpoint.load(result.folder.path / "checkpoint.pt")
    # 10 batches an epoch: windows of 3, 3, 3 and a last window of 1 -> 4 steps an epoch
    assert int(saved["optimizer"]["state"][0]["step"]) == 8
    assert len(steps(result.folder.path)) == 20  # every batch still has its loss row


def test_clipping_bounds_the_norm_and_records_the_measured_one(registry) -> None:
    clipped = train(registry, "train.epochs=1", "train.clip_grad_norm=0.05", output="clipped")
    free = train(registry, "train.epochs=1", output="free")
    norms = [float(row["grad_norm"]) for row in steps(clipped.folder.path)]
    assert len(norms) == 10 and all(math.isfinite(n) and n > 0 for n in norms)
    assert max(norms) > 0.05  # the measured norm is the one before clipping
    assert all(row["grad_norm"] == "" for row in steps(free.folder.path))
    a, b = weights(clipped.folder.path), weights(free.folder.path)
    assert any(not torch.equal(a[k], b[k]) for k in a), "clipping changed nothing"


def test_bf16_trains_on_the_cpu_and_is_recorded(registry) -> None:
    result = train(registry, "train.epochs=2", "train.precision=bf16")
    assert result.final_accuracy > 0.5
    status = json.loads((result.folder.path / "run.json").read_text())
    assert status["precision"] == "bf16" and status["device"] == "cpu"


def test_float16_on_the_cpu_is_refused_before_anything_runs() -> None:
    result = run_cli(str(RECIPES / "summary.toml"), *SYNTHETIC, "train.precision=16", "train.device=cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train.precision: '16' (float16 with a gradient scaler) needs a CUDA GPU" in result.stderr
    assert 'use precision = "bf16"' in result.stderr
    assert not Path("runs").exists()


def test_a_run_stopped_inside_an_accumulation_window_resumes_bitwise(registry, tmp_path: Path, monkeypatch) -> None:
    overrides = [
        "train.epochs=3", "train.accumulate_steps=3", "train.clip_grad_norm=0.5", "train.checkpoint_every_steps=4",
        "scheduler.name=cosine", "scheduler.warmup_steps=2",
    ]  # fmt: skip
    reference = train(registry, *overrides, output=str(tmp_path / "reference"))

    # batch 26: the last checkpoint (batch 24: epoch 3, batch 4) is inside a window
    with interrupted_at(F, "nll_loss", 26, counts=torch.is_grad_enabled), pytest.raises(KeyboardInterrupt):
        train(registry, *overrides)
    (folder,) = Path("runs").iterdir()
    saved = checkpoint.load(folder / "checkpoint.pt")
    assert saved["global_step"] == 24 and saved["window_grads"] is not None  # mid-window, with its gradients
    resumed = engine.run(load_recipe(folder / "recipe.toml", registry), resume=RunFolder(folder), **QUIET)
    a, b = weights(reference.folder.path), weights(resumed.folder.path)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    assert steps(reference.folder.path) == steps(resumed.folder.path)


@pytest.mark.slow
def test_accumulation_under_two_processes_keeps_the_ranks_in_sync(tmp_path: Path) -> None:
    result = run_cli(
        str(RECIPES / "summary.toml"), *SYNTHETIC, "train.epochs=1", "train.accumulate_steps=2",
        "train.clip_grad_norm=1.0", "--nproc", "2", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    status = json.loads((folder / "run.json").read_text())
    assert status["distributed"]["ranks_in_sync"] is True


@pytest.mark.slow
def test_compile_trains_the_same_model_as_eager_within_float_noise(registry) -> None:
    compiled = train(registry, "train.epochs=1", "train.compile=true", output="compiled")
    eager = train(registry, "train.epochs=1", output="eager")
    a, b = weights(compiled.folder.path), weights(eager.folder.path)
    # Inductor fuses and reorders float operations: the same training to within rounding, not bitwise.
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert compiled.final_accuracy == pytest.approx(eager.final_accuracy, abs=0.02)


def test_compile_without_a_cpp_compiler_is_refused_before_anything_runs(tmp_path: Path) -> None:
    no_compilers = tmp_path / "empty-bin"
    no_compilers.mkdir()
    result = run_cli(
        str(RECIPES / "summary.toml"), *SYNTHETIC, "train.compile=true", env={"PATH": str(no_compilers)}, cwd=tmp_path
    )
    assert result.returncode == 2 and "needs a C++ compiler" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_clipping_gives_the_same_bits_as_torchs_clip_grad_norm() -> None:
    from mlrun.precision import clip_grad_norm

    for seed, max_norm in ((0, 0.5), (1, 1e9), (2, 1e-3)):
        torch.manual_seed(seed)
        ours = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        theirs = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        theirs.load_state_dict(ours.state_dict())
        inputs = torch.randn(8, 20) * (seed + 1)
        for model in (ours, theirs):
            model(inputs).pow(2).sum().backward()
        expected = float(torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm))
        assert clip_grad_norm(ours, max_norm) == expected
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours.parameters(), theirs.parameters()))
