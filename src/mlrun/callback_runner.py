"""The engine's side of callbacks: build them, call their events, keep their state, apply the error policy.

A recipe's ``[[callbacks]]`` are built after the model. Each rank builds only the
callbacks it runs: loggers and ordinary callbacks on rank 0, ``all_ranks`` ones
everywhere. An event that raises fails the run with a :class:`CallbackError` naming
the callback, its plugin and the event, unless the callback is declared
``on_error="warn"`` (loggers only): then it warns once on stderr, training goes on,
and ``run.json`` records it under ``callback_warnings``.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlrun.callbacks import EVENTS, EpochInfo, FitEnd, RunInfo, StepInfo
from mlrun.errors import MlrunError
from mlrun.recipe import ComponentSpec, Recipe

#: The key of the callbacks' states in a checkpoint.
STATE_KEY = "callbacks"


class CallbackError(MlrunError):
    """A callback's event raised: the run fails like on any other error."""


@dataclass
class Active:
    """One built callback: its recipe entry, the object, and the events it implements."""

    spec: ComponentSpec
    index: int
    obj: Any
    events: dict[str, Any]
    #: With on_error="warn": the first error (warned once) and how many followed.
    warning: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        """Where its state lives in a checkpoint: its place in the recipe and its name."""
        return f"{self.index}.{self.spec.component.name}"

    @property
    def label(self) -> str:
        return f"callback '{self.spec.component.name}' (callbacks.{self.index}, from {self.spec.entry.plugin.label})"


@dataclass
class Callbacks:
    """The callbacks this rank runs, and the run they see."""

    run: RunInfo | None = None
    active: list[Active] = field(default_factory=list)
    ended: bool = False

    @classmethod
    def build(cls, recipe: Recipe, run: RunInfo) -> Callbacks:
        """Build the recipe's callbacks that run on this rank (see the module docstring)."""
        from mlrun.build import build_component

        callbacks = cls(run)
        for index, spec in enumerate(recipe.callbacks):
            component = spec.component
            everywhere = getattr(component, "all_ranks", False) and not getattr(component, "logger", False)
            if run.rank != 0 and not everywhere:
                continue
            obj = build_component(spec)
            events = {name: getattr(obj, name) for name in EVENTS if callable(getattr(obj, name, None))}
            callbacks.active.append(Active(spec, index, obj, events))
        return callbacks

    def wants(self, event: str) -> bool:
        """Whether any callback implements ``event`` (the loop skips building its data otherwise)."""
        return any(event in a.events for a in self.active)

    def fire(self, event: str, *args: Any) -> None:
        """Call ``event`` on every callback that has it, in recipe order."""
        for active in self.active:
            method = active.events.get(event)
            if method is None:
                continue
            try:
                method(self.run, *args)
            except Exception as exc:  # noqa: BLE001 - the policy decides: fail the run or warn
                self._failed(active, event, exc)

    def _failed(self, active: Active, event: str, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if getattr(active.spec.component, "on_error", "fail") != "warn":
            raise CallbackError(
                f"{active.label} failed in {event}: {error}",
                problems=["the run stops as on any failure: its last checkpoint is kept"],
            ) from exc
        if active.warning is not None:
            active.warning["count"] += 1
            return
        name = active.spec.component.name
        active.warning = {"callback": name, "plugin": active.spec.entry.plugin.label, "event": event, "error": error}
        active.warning["count"] = 1
        print(
            f"warning: {active.label} failed in {event}: {error}; training goes on "
            f"(on_error = 'warn'; further errors of '{name}' are counted in run.json, not shown)",
            file=sys.stderr,
            flush=True,
        )

    def warnings(self) -> list[dict[str, Any]]:
        """What ``run.json`` records under ``callback_warnings``: each warned callback's first error and count."""
        return [dict(a.warning) for a in self.active if a.warning is not None]

    # ---------------------------------------------------------------- the events

    def step_end(self, epoch: int, step: int, global_step: int, loss: float, lr: float, grad_norm: float) -> None:
        norm = None if math.isnan(grad_norm) else grad_norm
        self.fire("on_step_end", StepInfo(epoch, step, global_step, loss, lr, norm))

    def evaluate_end(self, row: Mapping[str, Any]) -> None:
        """``on_evaluate_end`` with the figures of a row of ``metrics.csv``."""
        self.fire("on_evaluate_end", int(row["epoch"]), _figures(row))

    def epoch_end(self, row: Mapping[str, Any]) -> None:
        """``on_epoch_end`` with a row of ``metrics.csv``."""
        epoch, loss, lr, seconds = (row[k] for k in ROW_KEYS)
        self.fire("on_epoch_end", EpochInfo(int(epoch), float(loss), _figures(row), float(lr), float(seconds)))

    def fit_end(self, status: str, reason: str = "", best: dict[str, Any] | None = None) -> None:
        """``on_fit_end``, once per run however it ends; on a failure path, a callback error is only warned."""
        if self.ended or self.run is None:
            return
        self.ended = True
        if status == "completed":
            self.fire("on_fit_end", FitEnd(status, reason, best))
            return
        try:  # the run's own error matters more than a callback's
            self.fire("on_fit_end", FitEnd(status, reason, best))
        except CallbackError as exc:
            print(f"warning: {exc}", file=sys.stderr, flush=True)

    def end(self, selection: Any, exc: BaseException | None) -> list[dict[str, Any]]:
        """``on_fit_end`` for how the run ended (see :class:`mlrun.callbacks.FitEnd`); returns :meth:`warnings`."""
        from mlrun.stopping import Interrupted

        if exc is None:
            stopped = selection.stopped_at is not None
            reason = selection.stop_reason() if stopped else ""
            self.fit_end(
                "stopped" if stopped else "completed", reason, selection.record() if selection.active else None
            )
        else:
            kind = "stopped" if isinstance(exc, Interrupted) else "failed"
            kind = "interrupted" if isinstance(exc, KeyboardInterrupt) else kind
            self.fit_end(kind, exc.render() if isinstance(exc, MlrunError) else f"{type(exc).__name__}: {exc}")
        return self.warnings()

    @contextlib.contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """The weights to evaluate and select with: those a callback provides (``ema`` when asked), else the model's."""
        with contextlib.ExitStack() as stack:
            for active in self.active:
                swap = getattr(active.obj, "evaluation_weights", None)
                if callable(swap):
                    stack.enter_context(swap())
            yield

    # ---------------------------------------------------------------- checkpoint state

    def state_dict(self) -> dict[str, Any]:
        """Every callback's ``state_dict()``, by its place in the recipe and name."""
        return {a.key: a.obj.state_dict() for a in self.active if callable(getattr(a.obj, "state_dict", None))}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Give each callback its saved state back (on resume)."""
        for active in self.active:
            saved = (state or {}).get(active.key)
            if saved is not None and callable(getattr(active.obj, "load_state_dict", None)):
                active.obj.load_state_dict(saved)


#: The columns of a metrics row that are not evaluation figures.
ROW_KEYS = ("epoch", "train_loss", "lr", "seconds")


def _figures(row: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k not in ROW_KEYS}


def run_info(recipe: Recipe, run_dir: Path, built: Any, group: Any) -> RunInfo:
    """What every event gets as ``run``."""
    rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
    per_rank = -(-built.train_size // world)  # every rank takes as many samples (see Group.shard)
    steps = -(-per_rank // recipe.train.batch_size)
    return RunInfo(run_dir, recipe.to_dict(), built.model, recipe.train.epochs, steps, rank, world)
