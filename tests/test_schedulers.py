"""Learning-rate schedulers: a plugin kind whose built-ins match torch's own schedulers (issue #13)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.optim import lr_scheduler

from mlrun.build import build
from mlrun.recipe import load_recipe
from mlrun.schedule import steps_per_epoch

from conftest import RECIPES, interrupted_at, run_cli

SYNTHETIC = ["dataset.name=synthetic", "dataset.size=320", "train.batch_size=32"]  # 10 steps per epoch
EPOCHS = 6


def mlrun_rates(registry, *overrides: str) -> list[float]:
    """The learning rate of every optimizer step, stepping the schedule as the trainer does."""
    recipe = load_recipe(RECIPES / "summary.toml", registry, [*SYNTHETIC, f"train.epochs={EPOCHS}", *overrides])
    built = build(recipe)
    rates = []
    for epoch in range(EPOCHS):
        for _ in range(10):
            rates.append(built.optimizer.param_groups[0]["lr"])
            built.optimizer.step()
            built.schedule.after_step()
        built.schedule.after_epoch({"loss": 1.0, "accuracy": 0.5})  # a plateau: nothing improves
    return rates


def torch_rates(make, *, per_step: bool, metric: float | None = None) -> list[float]:
    """The same, with torch's scheduler built and stepped by hand."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = make(optimizer)
    rates = []
    for epoch in range(EPOCHS):
        for _ in range(10):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if per_step:
                scheduler.step()
        if not per_step:
            scheduler.step(metric) if metric is not None else scheduler.step()
    return rates


CASES = {
    "step": (["scheduler.name=step", "scheduler.step_size=2", "scheduler.gamma=0.5"],
             lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=0.5), False, None),
    "multistep": (["scheduler.name=multistep", "scheduler.milestones=[2, 5]"],
                  lambda o: lr_scheduler.MultiStepLR(o, milestones=[2, 5], gamma=0.1), False, None),
    "exponential": (["scheduler.name=exponential", "scheduler.gamma=0.8"],
                    lambda o: lr_scheduler.ExponentialLR(o, gamma=0.8), False, None),
    "cosine": (["scheduler.name=cosine", "scheduler.eta_min=0.001"],
               lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=60, eta_min=0.001), True, None),
    "cosine_warmup": (
        ["scheduler.name=cosine", "scheduler.warmup_epochs=1"],
        lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=10),
                                                lr_scheduler.CosineAnnealingLR(o, T_max=50)], milestones=[10]),
        True, None),
    "one_cycle": (["scheduler.name=one_cycle", "scheduler.max_lr=0.1"],
                  lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=60), True, None),
    "reduce_on_plateau": (["scheduler.name=reduce_on_plateau", "scheduler.patience=1"],
                          lambda o: lr_scheduler.ReduceLROnPlateau(o, patience=1), False, 1.0),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_each_built_in_scheduler_matches_torch_driven_by_hand(registry, case: str) -> None:
    overrides, make, per_step, metric = CASES[case]
    ours = mlrun_rates(registry, *overrides)
    assert ours == torch_rates(make, per_step=per_step, metric=metric)
    assert len(set(ours)) > 1, "the learning rate never changed"


def test_without_a_scheduler_the_learning_rate_is_constant(registry) -> None:
    assert set(mlrun_rates(registry)) == {0.01}


def test_the_cosine_warmup_starts_low_and_the_decay_ends_at_eta_min(registry) -> None:
    rates = mlrun_rates(registry, "scheduler.name=cosine", "scheduler.warmup_steps=5", "scheduler.eta_min=0.0")
    assert math.isclose(rates[0], 0.001) and max(rates) == pytest.approx(0.01)
    assert rates[-1] < 0.0001


def test_steps_per_epoch_counts_one_process_s_share() -> None:
    assert steps_per_epoch(60000, 64) == 938
    assert steps_per_epoch(60000, 64, world_size=2) == 469
    assert steps_per_epoch(10, 64) == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scheduler.name=one_cycle"], "scheduler.max_lr: required parameter of scheduler 'one_cycle' is missing"),
        (
            ["scheduler.name=cosine", "scheduler.warmup_epochs=6"],
            "the warmup (60 optimizer steps) is as long as the run",
        ),
        (["scheduler.name=step", "scheduler.warmup_epochs=9"], "the warmup (9 epochs) is as long as the run"),
        (
            ["scheduler.name=cosine", "scheduler.warmup_epochs=1", "scheduler.warmup_steps=3"],
            "warmup_steps or warmup_epochs, not both",
        ),
        (["scheduler.name=multistep", "scheduler.milestones=[5, 2]"], "milestones must be increasing"),
        (["scheduler.name=cosin"], "unknown scheduler 'cosin' — did you mean 'cosine'?"),
    ],
)
def test_bad_combinations_are_refused_before_anything_runs(overrides: list[str], message: str) -> None:
    result = run_cli(str(RECIPES / "summary.toml"), *SYNTHETIC, f"train.epochs={EPOCHS}", *overrides)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr
    assert "epoch 1/" not in result.stdout


@pytest.mark.parametrize(
    "scheduler", [["scheduler.name=cosine", "scheduler.warmup_steps=4"], ["scheduler.name=step", "scheduler.gamma=0.5"]]
)
def test_a_run_stopped_mid_epoch_and_resumed_matches_an_uninterrupted_one(
    registry, tmp_path, monkeypatch, scheduler
) -> None:
    import torch.nn.functional as F

    from mlrun import engine
    from mlrun.runs import RunFolder

    quiet = {"echo": lambda line: None, "progress": False}
    overrides = [*SYNTHETIC, "train.epochs=4", "train.checkpoint_every_steps=7", *scheduler]
    reference = engine.run(
        load_recipe(RECIPES / "summary.toml", registry, [*overrides, f"train.output_dir={tmp_path / 'ref'}"]), **quiet
    )

    # step 25: mid-epoch 3, four steps after the checkpoint at step 21
    with interrupted_at(F, "nll_loss", 25, counts=torch.is_grad_enabled), pytest.raises(KeyboardInterrupt):
        engine.run(load_recipe(RECIPES / "summary.toml", registry, overrides), **quiet)
    (folder,) = Path("runs").iterdir()  # the test runs in its own folder
    resumed = engine.run(load_recipe(folder / "recipe.toml", registry), resume=RunFolder(folder), **quiet)
    a = torch.load(reference.folder.path / "model.pt", weights_only=True)
    b = torch.load(resumed.folder.path / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    assert [r["lr"] for r in reference.metrics] == [r["lr"] for r in resumed.metrics]
    assert [r["train_loss"] for r in reference.metrics] == [r["train_loss"] for r in resumed.metrics]
