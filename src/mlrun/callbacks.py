"""What a callback sees: the events the engine calls and the read-only data it passes.

A callback is an object built by a ``callback`` component's factory (see
:class:`mlrun.Callback`), named in a recipe's ``[[callbacks]]`` list. It implements any
subset of the events of :class:`CallbackProtocol`; the engine calls only those it has.
Each event gets frozen data classes, never the engine's own state, so a callback cannot
change how the run trains except through the model it is given (which only callbacks
like ``ema`` touch, and then their state is in every checkpoint).

The set of events is small on purpose; each one is used by a built-in:

- ``on_fit_start``: ``tensorboard`` writes the resolved recipe; ``ema`` takes its first copy.
- ``on_step_end``: ``tensorboard`` writes the step's loss and learning rate; ``ema`` updates.
- ``on_evaluate_end``: the figures of the epoch's evaluation, before selection sees them.
- ``on_epoch_end``: ``tensorboard`` writes the epoch's figures (as in ``metrics.csv``).
- ``on_fit_end``: called however the run ends (completed, stopped, failed, interrupted):
  ``tensorboard`` closes its files, ``ema`` writes ``ema.pt``.

A callback that keeps weights of its own (``ema``) may also give
``evaluation_weights()``: a context manager inside which the model holds those weights.
The engine enters it around each epoch's evaluation and model selection (``best.pt``)
and around saving ``model.pt`` and the final test; the model's own weights are back
afterwards, and training always uses them.

A callback with state that matters for resume (``ema``'s averaged weights, a logger's
step counter) provides ``state_dict()`` and ``load_state_dict(state)``: the state is
saved in every checkpoint and restored on resume, so a resumed run stays bitwise.
"""

from __future__ import annotations

import pathlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import torch

#: How a run ended, as passed to ``on_fit_end`` (and recorded in ``run.json``).
FitStatus = Literal["completed", "stopped", "failed", "interrupted"]

#: The events, in the order a run calls them (``on_step_end`` once per batch).
EVENTS: tuple[str, ...] = ("on_fit_start", "on_step_end", "on_evaluate_end", "on_epoch_end", "on_fit_end")


@dataclass(frozen=True)
class RunInfo:
    """The run a callback is part of; the same object for every event of the run."""

    #: The run folder (``runs/<name>``): a callback writes its own files under it.
    run_dir: pathlib.Path
    #: The resolved recipe, as recorded in ``recipe.toml`` (a plain dict; do not modify it).
    recipe: dict[str, Any]
    #: The model being trained (under DDP the unwrapped module).
    model: torch.nn.Module
    epochs: int
    #: Optimizer steps (batches) per epoch on this rank.
    steps_per_epoch: int
    rank: int
    world_size: int


@dataclass(frozen=True)
class StepInfo:
    """One optimizer step, after ``optimizer.step()`` and the scheduler's step."""

    epoch: int
    #: 1-based within the epoch.
    step: int
    #: Batches since the start of the run (counting those before a resume).
    global_step: int
    #: The batch's training loss.
    loss: float
    #: The learning rate the step used (first parameter group).
    lr: float
    #: The gradient norm before clipping, when ``train.clip_grad_norm`` is set; else None.
    grad_norm: float | None


@dataclass(frozen=True)
class EpochInfo:
    """One finished epoch: its row of ``metrics.csv``."""

    epoch: int
    train_loss: float
    #: The epoch's evaluation figures, as in ``metrics.csv``: ``val_loss``, ``val_accuracy``,
    #: ... (or ``test_loss``, ``test_accuracy``, ... when the run has no validation split).
    figures: dict[str, float]
    #: The learning rate at the end of the epoch.
    lr: float
    #: Wall-clock seconds the epoch took (training and evaluation).
    seconds: float


@dataclass(frozen=True)
class FitEnd:
    """How the run ended, passed to ``on_fit_end``."""

    #: ``completed``, ``stopped`` (early stopping or a signal), ``failed`` or ``interrupted``.
    status: str
    #: Why, in words (empty when completed).
    reason: str
    #: The selected epoch and its figures, as in ``run.json``'s ``best`` (None without selection).
    best: dict[str, Any] | None


class CallbackProtocol(Protocol):
    """The events a callback may implement; every one is optional.

    The engine looks each method up once, when the callback is built, and calls only
    those present. An event that raises fails the run (``run.json`` status ``failed``,
    the last checkpoint kept), unless the callback's descriptor says ``on_error="warn"``.
    """

    def on_fit_start(self, run: RunInfo) -> None:
        """Before the first step (also after a resume, before the first resumed step)."""

    def on_step_end(self, run: RunInfo, step: StepInfo) -> None:
        """After every optimizer step."""

    def on_evaluate_end(self, run: RunInfo, epoch: int, figures: dict[str, float]) -> None:
        """After each epoch's evaluation, with its figures (as in ``metrics.csv``)."""

    def on_epoch_end(self, run: RunInfo, epoch: EpochInfo) -> None:
        """After each epoch, once its row of ``metrics.csv`` is written."""

    def on_fit_end(self, run: RunInfo, end: FitEnd) -> None:
        """Once, however the run ends: completed, stopped, failed or interrupted."""

    def state_dict(self) -> dict[str, Any]:
        """The state to save in every checkpoint (tensors and plain data)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`, on resume."""

    def evaluation_weights(self) -> AbstractContextManager[None]:
        """Optional: inside it the model holds the weights to evaluate, select and save (``ema``'s average)."""
        ...


__all__ = ["EVENTS", "CallbackProtocol", "EpochInfo", "FitEnd", "FitStatus", "RunInfo", "StepInfo"]
