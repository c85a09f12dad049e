"""Built-in learning-rate schedulers over ``torch.optim.lr_scheduler``.

The engine injects ``steps_per_epoch`` (optimizer steps in one epoch) and ``epochs``,
so durations are given in epochs (warmups also in steps) and no recipe computes a
total number of steps by hand. ``step``, ``multistep`` and ``exponential`` keep
torch's per-epoch semantics; ``cosine`` and ``one_cycle`` step after every optimizer
step. A linear warmup chains in front of any of them (``warmup_epochs`` /
``warmup_steps``), through torch's own ``SequentialLR``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Gt, Le, Lt
from torch.optim import lr_scheduler

from mlrun import Scheduler, hookimpl

Factor = Annotated[float, Gt(0), Le(1)]
Epochs = Annotated[int, Ge(0)]
Decay = Annotated[float, Gt(0), Lt(1)]


def _with_warmup(optimizer: torch.optim.Optimizer, main: Any, warmup: int, start: float) -> Any:
    """``main`` after ``warmup`` steps of linear warmup from ``start`` x the learning rate."""
    if warmup == 0:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def _warmup_fits(warmup: int, total: int, unit: str) -> None:
    if warmup >= total:
        raise ValueError(
            f"the warmup ({warmup} {unit}) is as long as the run ({total} {unit}) or longer: "
            "shorten the warmup or train longer"
        )


def step(
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    step_size: Annotated[int, Gt(0)] = 1,
    gamma: Decay = 0.1,
    warmup_epochs: Epochs = 0,
    warmup_start: Factor = 0.1,
) -> Any:
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs (StepLR)."""
    _warmup_fits(warmup_epochs, epochs, "epochs")
    main = lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    return _with_warmup(optimizer, main, warmup_epochs, warmup_start)


def multistep(
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    milestones: list[Annotated[int, Gt(0)]],
    gamma: Decay = 0.1,
    warmup_epochs: Epochs = 0,
    warmup_start: Factor = 0.1,
) -> Any:
    """Multiply the learning rate by ``gamma`` at each milestone epoch (MultiStepLR)."""
    _warmup_fits(warmup_epochs, epochs, "epochs")
    main = lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    return _with_warmup(optimizer, main, warmup_epochs, warmup_start)


def exponential(
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    gamma: Decay = 0.9,
    warmup_epochs: Epochs = 0,
    warmup_start: Factor = 0.1,
) -> Any:
    """Multiply the learning rate by ``gamma`` after every epoch (ExponentialLR)."""
    _warmup_fits(warmup_epochs, epochs, "epochs")
    return _with_warmup(optimizer, lr_scheduler.ExponentialLR(optimizer, gamma=gamma), warmup_epochs, warmup_start)


def _warmup_steps(warmup_steps: int, warmup_epochs: int, steps_per_epoch: int) -> int:
    if warmup_steps and warmup_epochs:
        raise ValueError("give warmup_steps or warmup_epochs, not both")
    return warmup_steps or warmup_epochs * steps_per_epoch


def cosine(
    *,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    epochs: int,
    eta_min: Annotated[float, Ge(0)] = 0.0,
    warmup_steps: Epochs = 0,
    warmup_epochs: Epochs = 0,
    warmup_start: Factor = 0.1,
) -> Any:
    """Cosine decay to ``eta_min`` over the whole run, per optimizer step (CosineAnnealingLR)."""
    total = steps_per_epoch * epochs
    warmup = _warmup_steps(warmup_steps, warmup_epochs, steps_per_epoch)
    _warmup_fits(warmup, total, "optimizer steps")
    main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=eta_min)
    return _with_warmup(optimizer, main, warmup, warmup_start)


def one_cycle(
    *,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    epochs: int,
    max_lr: Annotated[float, Gt(0)],
    pct_start: Annotated[float, Gt(0), Lt(1)] = 0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    cycle_momentum: bool = True,
    div_factor: Annotated[float, Gt(0)] = 25.0,
    final_div_factor: Annotated[float, Gt(0)] = 1e4,
    three_phase: bool = False,
) -> Any:
    """The 1cycle policy: up to ``max_lr``, then down, over the whole run (OneCycleLR)."""
    return lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=steps_per_epoch * epochs, pct_start=pct_start,
        anneal_strategy=anneal_strategy, cycle_momentum=cycle_momentum and _has_momentum(optimizer),
        div_factor=div_factor, final_div_factor=final_div_factor, three_phase=three_phase,
    )  # fmt: skip


def _has_momentum(optimizer: torch.optim.Optimizer) -> bool:
    # OneCycleLR cycles momentum (or Adam's beta1); an optimizer without either cannot.
    defaults = optimizer.defaults
    return "betas" in defaults or bool(defaults.get("momentum"))


def reduce_on_plateau(
    *,
    optimizer: torch.optim.Optimizer,
    monitor: str = "loss",
    factor: Decay = 0.1,
    patience: Annotated[int, Ge(0)] = 10,
    threshold: Annotated[float, Ge(0)] = 1e-4,
    cooldown: Annotated[int, Ge(0)] = 0,
    min_lr: Annotated[float, Ge(0)] = 0.0,
) -> Any:
    """Multiply the learning rate by ``factor`` when the monitored metric stops improving.

    ``monitor``: ``loss`` or ``accuracy`` of the split evaluated each epoch, or a split's figure
    such as ``val.loss`` or ``val.macro_f1`` (a loss is minimised, any other figure maximised).
    """
    mode: Literal["min", "max"] = "min" if monitor.rpartition(".")[2] == "loss" else "max"
    return lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=factor, patience=patience, threshold=threshold,
        cooldown=cooldown, min_lr=min_lr,
    )  # fmt: skip


def _monitor_form(params: Mapping[str, Any]) -> None:
    monitor = params["monitor"]
    split, dot, name = monitor.rpartition(".")
    if not name or (dot and split not in ("val", "test")):
        raise ValueError(
            f"monitor must be 'loss', 'accuracy' or a split's figure such as 'val.loss' or 'val.accuracy', got {monitor!r}"
        )


def _increasing(params: Mapping[str, Any]) -> None:
    milestones = list(params["milestones"])
    if not milestones or milestones != sorted(set(milestones)):
        raise ValueError(f"milestones must be increasing epoch numbers, e.g. [10, 20], got {milestones}")


@hookimpl
def register_schedulers() -> list[Scheduler]:
    """Step, multistep, exponential, cosine (with warmup), one-cycle and reduce-on-plateau."""
    return [
        Scheduler("step", step, "learning rate x gamma every step_size epochs (StepLR)", interval="epoch"),
        Scheduler("multistep", multistep, "learning rate x gamma at milestone epochs (MultiStepLR)", interval="epoch", validate=_increasing),
        Scheduler("exponential", exponential, "learning rate x gamma after each epoch (ExponentialLR)", interval="epoch"),
        Scheduler("cosine", cosine, "cosine decay over the run per step, optional linear warmup (CosineAnnealingLR)"),
        Scheduler("one_cycle", one_cycle, "1cycle: up to max_lr and down over the run, per step (OneCycleLR)"),
        Scheduler("reduce_on_plateau", reduce_on_plateau, "learning rate x factor when the monitored metric stalls (ReduceLROnPlateau)", interval="epoch", monitor=True, validate=_monitor_form),
    ]  # fmt: skip
