"""Model selection and early stopping: which epoch was best by ``train.monitor``, and when to stop.

The state (best value, best epoch, epochs without improvement, the epoch training stopped
at) travels in the checkpoint, so a resumed run selects and stops exactly as an
uninterrupted one. Nothing here runs without ``train.monitor``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlrun.components import Component

if TYPE_CHECKING:
    from mlrun.recipe import ComponentSpec
    from mlrun.settings import TrainSettings


def monitor_mode(settings: TrainSettings, metrics: Sequence[ComponentSpec]) -> str:
    """``max`` or ``min`` for ``train.monitor``: ``train.mode``, else from the metric (min for a loss)."""
    if settings.mode != "auto":
        return settings.mode
    from mlrun.metrics import metric_labels

    name = (settings.monitor or "").partition(".")[2]
    labels = metric_labels([(spec.component.name, spec.params) for spec in metrics])
    for label, spec in zip(labels, metrics):
        component: Component = spec.component
        if label == name:
            return "max" if getattr(component, "higher_is_better", True) else "min"
    return "min"  # the loss


@dataclass
class Selection:
    """Tracks the monitored figure epoch by epoch."""

    monitor: str | None = None
    mode: str = "max"
    patience: int | None = None
    min_delta: float = 0.0
    best_value: float | None = None
    best_epoch: int | None = None
    #: Epochs since the last improvement.
    waited: int = 0
    #: The epoch after which early stopping ended training (None: it did not).
    stopped_at: int | None = None

    @classmethod
    def from_settings(cls, settings: TrainSettings, metrics: Sequence[ComponentSpec]) -> Selection:
        """The selection a recipe asks for (inactive without ``train.monitor``)."""
        return cls(settings.monitor, monitor_mode(settings, metrics), settings.patience, settings.min_delta)

    @property
    def active(self) -> bool:
        """Whether a figure is monitored at all."""
        return self.monitor is not None

    @property
    def column(self) -> str:
        """The metrics.csv column of the monitored figure: ``val.accuracy`` is ``val_accuracy``."""
        return (self.monitor or "").replace(".", "_", 1)

    def update(self, epoch: int, value: float) -> bool:
        """Record an epoch's figure; True when it is the best so far (by more than ``min_delta``)."""
        best = self.best_value
        if math.isnan(value):
            improved = False
        elif best is None:
            improved = True
        elif self.mode == "max":
            improved = value > best + self.min_delta
        else:
            improved = value < best - self.min_delta
        if improved:
            self.best_value, self.best_epoch, self.waited = value, epoch, 0
        else:
            self.waited += 1
            if self.patience is not None and self.waited >= self.patience:
                self.stopped_at = epoch
        return improved

    def stop_reason(self) -> str:
        """The run log's line saying why and when training stopped early."""
        return (
            f"early stopping after epoch {self.stopped_at}: {self.monitor} has not improved by more than "
            f"{self.min_delta:g} for {self.waited} epochs (train.patience = {self.patience}); best "
            f"{self.best_value:.4f} at epoch {self.best_epoch}"
        )

    def state_dict(self) -> dict[str, Any]:
        """The checkpointed state."""
        return {k: v for k, v in asdict(self).items() if k in ("best_value", "best_epoch", "waited", "stopped_at")}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from a :meth:`state_dict` (a checkpoint from before selection existed has none)."""
        for key, value in (state or {}).items():
            setattr(self, key, value)

    def record(self) -> dict[str, Any]:
        """What run.json says about the selection."""
        found = {
            "monitor": self.monitor,
            "mode": self.mode,
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
        }
        if self.stopped_at is not None:
            found["stopped_early_after_epoch"] = self.stopped_at
            found["stop_reason"] = self.stop_reason()
        return found
