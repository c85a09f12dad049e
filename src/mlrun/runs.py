"""The run folder: one per run, every file in it written atomically.

Layout of ``<output_dir>/<run_name>-<YYYYmmdd-HHMMSS>/``:

- ``recipe.toml``  the fully resolved recipe (all defaults filled in)
- ``run.json``     status (running / completed / failed), versions, timings, final metrics
- ``metrics.csv``  one row per epoch
- ``model.pt``     the trained weights (a ``state_dict``; load with ``weights_only=True``)
- ``steps.csv``    the training loss of every step
- ``checkpoint.pt`` the latest checkpoint (see :mod:`mlrun.checkpoint`), for ``mlrun resume``
- ``metrics.png``  training vs test loss and test accuracy per epoch
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from mlrun.errors import UsageError
from mlrun.files import atomic_write, atomic_write_text, nearest_existing

RECIPE_FILE = "recipe.toml"
STATUS_FILE = "run.json"
METRICS_FILE = "metrics.csv"
WEIGHTS_FILE = "model.pt"
STEPS_FILE = "steps.csv"


class RunFolder:
    """A run's folder and the files in it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, output_dir: str | Path, run_name: str) -> RunFolder:
        """Make a new, uniquely named run folder under ``output_dir``."""
        output_dir = Path(output_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            for attempt in range(1000):
                suffix = f"-{attempt}" if attempt else ""
                path = output_dir / f"{run_name}-{stamp}{suffix}"
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                return cls(path)
        except OSError as exc:
            raise UsageError(
                f"cannot create a run folder in {output_dir}: {exc.strerror or exc}",
                problems=["choose a writable folder: train.output_dir=DIR"],
            ) from exc
        raise UsageError(f"cannot create a run folder in {output_dir}: too many runs this second")

    @staticmethod
    def check_writable(output_dir: str | Path) -> None:
        """Raise a UsageError now if run folders cannot be created under ``output_dir``."""
        folder = Path(output_dir)
        existing = nearest_existing(folder)
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(
                f"output folder {folder} is not writable ({existing} does not allow it)",
                problems=["choose a writable folder: train.output_dir=DIR"],
            )

    def write_recipe(self, resolved: Mapping[str, Any], header: str) -> None:
        """Save the resolved recipe as TOML, with a comment header."""
        atomic_write_text(self.path / RECIPE_FILE, header + tomli_w.dumps(dict(resolved)))

    def write_status(self, status: Mapping[str, Any]) -> None:
        """Save ``run.json``."""
        atomic_write_text(self.path / STATUS_FILE, json.dumps(status, indent=2) + "\n")

    def write_metrics(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Save every epoch's metrics as CSV (rewritten whole each time, so it is never torn)."""
        if not rows:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path / METRICS_FILE, buffer.getvalue())

    def read_status(self) -> dict[str, Any]:
        """Load ``run.json`` (an empty status if the run never wrote one)."""
        path = self.path / STATUS_FILE
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path} is unreadable ({exc}); is this an mlrun run folder?") from exc

    def write_step_losses(self, rows: Sequence[tuple[int, int, float]]) -> None:
        """Save the training loss of every step as ``steps.csv`` (epoch, step, loss)."""
        lines = ["epoch,step,train_loss"] + [f"{e},{s},{v!r}" for e, s, v in rows]
        atomic_write_text(self.path / STEPS_FILE, "\n".join(lines) + "\n")

    def save_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Save the model's ``state_dict``."""
        import torch

        atomic_write(self.path / WEIGHTS_FILE, lambda out: torch.save(dict(state_dict), out))
