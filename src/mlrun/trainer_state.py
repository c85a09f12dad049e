"""A trainer's checkpointable state: what it captures, how it is restored, and what must fit.

A checkpoint holds the weights, the optimizer's and scheduler's state, every random
generator, the data order and the position in it, each rank's running loss, the
accumulation window's gradients and the gradient scaler's state: everything needed
for a resumed run to end bitwise-identical to an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mlrun import checkpoint
from mlrun.errors import UsageError

if TYPE_CHECKING:
    from mlrun.trainer import Trainer


@dataclass
class Position:
    """Where training is: the epoch in progress, batches done in it, and the running loss."""

    epoch: int = 1
    step: int = 0
    global_step: int = 0
    indices: torch.Tensor | None = None  # this epoch's sample order; None before it starts
    loss_sum: float = 0.0
    sample_count: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    #: One row per batch: epoch, step, loss, learning rate, gradient norm (NaN: not measured).
    step_losses: list[tuple[int, int, float, float, float]] = field(default_factory=list)


#: A step row: epoch, step, loss, the learning rate it used, the gradient norm (NaN: not measured).
STEP_COLUMNS = 5


def _step_row(row: Sequence[float]) -> tuple[int, int, float, float, float]:
    """A saved step row; checkpoints from before mlrun recorded lr and norms have 3 columns."""
    epoch, step, loss, *rest = row
    lr, norm = (list(rest) + [float("nan"), float("nan")])[:2]
    return int(epoch), int(step), float(loss), float(lr), float(norm)


def capture(self: Trainer) -> dict[str, Any]:
    """Everything needed to continue ``self`` exactly from here (call on every rank: it gathers)."""
    p = self.position
    share = (p.loss_sum, float(p.sample_count))
    # Each rank's running loss is its own: rank 0 writes them all, each rank restores its own.
    shares = self.group.gather(share) if self.group is not None else [share]
    return {
        "recipe": self.recipe_record,
        "world_size": self.group.world_size if self.group is not None else 1,
        "train_size": self.built.train_size,
        "loss_shares": torch.tensor(shares, dtype=torch.float64),
        "model": self.built.model.state_dict(),
        "optimizer": self.built.optimizer.state_dict(),
        "scheduler": self.built.schedule.state_dict(),
        "rng": checkpoint.capture_rng(),
        "order": self.order.state(),
        "epoch": p.epoch,
        "step": p.step,
        "global_step": p.global_step,
        "indices": p.indices,
        "loss_sum": p.loss_sum,
        "sample_count": p.sample_count,
        "metrics": p.metrics,
        "step_losses": torch.tensor(p.step_losses, dtype=torch.float64).reshape(-1, STEP_COLUMNS),
        # Inside an accumulation window, the gradients added up so far are part of the state.
        "window_grads": _window_grads(self),
        "grad_scaler": self.precision.state_dict(),
        # The best figure so far, its epoch and the patience counter: a resumed run stops where this one would.
        "selection": self.selection.state_dict(),
        # Each callback's state (ema's averaged weights...): a resumed run continues it exactly.
        "callbacks": self.callbacks.state_dict(),
    }


def restore(self: Trainer, state: dict[str, Any], changed: Sequence[str] = ()) -> None:
    """Continue ``self`` from a :func:`capture` loaded from a checkpoint; a misfit is a UsageError.

    ``changed``: the recipe keys a forced resume changes (see :mod:`mlrun.resume`). The
    optimizer settings among them (lr, weight decay…) are applied after the optimizer's
    state is loaded, so they really take effect; the others stay as the state has them
    (a scheduler's current learning rate, say).
    """
    _check_fits(self, state)
    optimizer = self.built.optimizer
    new = {key.split(".", 1)[1] for key in changed if key.startswith("optimizer.")}
    recipe_hyper = [{k: v for k, v in g.items() if k in new} for g in optimizer.param_groups]
    try:
        self.built.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0][:300]
        raise UsageError(
            f"the checkpoint does not fit model '{self.recipe.model.component.name}' or "
            f"optimizer '{self.recipe.optimizer.component.name}' ({reason})",
            problems=["resume with the recipe the run was trained with, or start a new run"],
        ) from exc
    for group, hyper in zip(optimizer.param_groups, recipe_hyper):
        group.update(hyper)
    self.built.schedule.load_state_dict(state.get("scheduler"))
    checkpoint.restore_rng(state["rng"])
    self.order.restore(state["order"])
    self.position = Position(
        epoch=state["epoch"], step=state["step"], global_step=state["global_step"],
        indices=state["indices"], loss_sum=state["loss_sum"],
        sample_count=state["sample_count"], metrics=list(state["metrics"]),
        step_losses=[_step_row(row) for row in state["step_losses"].tolist()],
    )  # fmt: skip
    grads = state.get("window_grads")
    if grads is not None:
        for param, grad in zip(self.built.model.parameters(), grads):
            param.grad = None if grad is None else grad.to(param.device)
    self.precision.load_state_dict(state.get("grad_scaler"))
    self.selection.load_state_dict(state.get("selection"))
    self.callbacks.load_state_dict(state.get("callbacks"))
    shares = state.get("loss_shares")
    if shares is not None and len(shares) == state.get("world_size", 1):
        loss_sum, count = shares[self.group.rank if self.group is not None else 0].tolist()
        self.position.loss_sum, self.position.sample_count = loss_sum, int(count)


def _window_grads(self: Trainer) -> list[torch.Tensor | None] | None:
    if self.position.step % self.settings.accumulate_steps == 0:
        return None  # between windows: the next batch starts from zero gradients
    return [None if p.grad is None else p.grad.detach().clone() for p in self.built.model.parameters()]


def _check_fits(self: Trainer, state: dict[str, Any]) -> None:
    """Refuse, before anything changes, a checkpoint from another world size or other data."""
    world = self.group.world_size if self.group is not None else 1
    saved_world = int(state.get("world_size", world))
    if saved_world != world:
        raise UsageError(
            f"this run was trained with {saved_world} process{'es' if saved_world > 1 else ''}, "
            f"not {world}: another count changes the batches and the weights",
            problems=[f"resume with: mlrun resume {self.folder.path} --nproc {saved_world}"],
        )
    saved_size, size = state.get("train_size"), self.built.train_size
    if saved_size is not None and int(saved_size) != size:
        raise UsageError(
            f"the training split now has {size} samples, but the checkpoint was taken with "
            f"{saved_size}: the data changed since the run started",
            problems=["restore the original data, or start a new run"],
        )
