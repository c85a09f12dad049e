"""The learning-rate schedule of a run: built with the run's own numbers, stepped at the right moments.

A ``[scheduler]`` component is built with ``steps_per_epoch`` and ``epochs`` computed
here (per process under DDP), so a recipe never counts steps by hand. Without a
``[scheduler]`` section the learning rate stays constant and nothing here runs: the
numbers are exactly those of a run before schedulers existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from mlrun.errors import UsageError
from mlrun.recipe import ComponentSpec, Recipe


def steps_per_epoch(train_size: int, batch_size: int, world_size: int = 1, accumulate: int = 1) -> int:
    """Optimizer steps in one epoch of one process (each process takes an equal share).

    With gradient accumulation a step takes ``accumulate`` batches; an epoch's last,
    shorter window still makes a step.
    """
    per_process = -(-train_size // world_size)
    batches = -(-per_process // batch_size)
    return max(1, -(-batches // accumulate))


@dataclass
class Schedule:
    """A built scheduler and when to step it; ``scheduler`` is None for a constant learning rate."""

    scheduler: Any = None
    interval: str = "step"
    #: The figure a schedule that watches one steps on: "loss", "accuracy" (of the split evaluated
    #: each epoch), or a split's figure such as "val.loss" or "val.macro_f1".
    monitor: str | None = None

    def after_step(self) -> None:
        """Call after every optimizer step."""
        if self.scheduler is not None and self.interval == "step":
            self.scheduler.step()

    def after_epoch(self, figures: Mapping[str, float]) -> None:
        """Call after each epoch's evaluation, with its figures by name (see :attr:`monitor`)."""
        if self.scheduler is None or self.interval != "epoch":
            return
        if self.monitor is None:
            self.scheduler.step()
        else:
            self.scheduler.step(figures[self.monitor])

    def state_dict(self) -> dict[str, Any] | None:
        """The scheduler's state for the checkpoint (None without a scheduler)."""
        return self.scheduler.state_dict() if self.scheduler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from a :meth:`state_dict`."""
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)


def build_schedule(recipe: Recipe, optimizer: Any, train_size: int, world_size: int = 1) -> Schedule:
    """Build the recipe's scheduler, if any, for this optimizer and run length."""
    from mlrun.build import build_component

    spec: ComponentSpec | None = recipe.scheduler
    if spec is None:
        return Schedule()
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise UsageError(
            f"scheduler: '{spec.component.name}' needs a torch.optim.Optimizer to drive, but optimizer "
            f"'{recipe.optimizer.component.name}' built a {type(optimizer).__name__}",
            problems=["remove the [scheduler] section, or use an optimizer from torch.optim"],
        )
    steps = steps_per_epoch(train_size, recipe.train.batch_size, world_size, recipe.train.accumulate_steps)
    scheduler = build_component(spec, optimizer=optimizer, steps_per_epoch=steps, epochs=recipe.train.epochs)
    component = spec.component
    monitor = spec.params.get("monitor") if getattr(component, "monitor", False) else None
    return Schedule(scheduler, getattr(component, "interval", "step"), monitor)
