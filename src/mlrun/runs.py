"""The run folder: one per run, every file in it written atomically.

Layout of ``<output_dir>/<run_name>-<YYYYmmdd-HHMMSS>/``:

- ``recipe.toml``  the fully resolved recipe (all defaults filled in)
- ``run.json``     status (running / completed / failed), versions, timings, final metrics
- ``metrics.csv``  one row per epoch
- ``model.pt``     the trained weights (a ``state_dict``; load with ``weights_only=True``)
- ``best.pt``      with ``train.monitor``: the weights of the best epoch (same format)
- ``steps.csv``    the training loss of every step
- ``checkpoint.pt`` the latest checkpoint (see :mod:`mlrun.checkpoint`), for ``mlrun resume``
- ``metrics.png``  training vs test loss and test accuracy per epoch
- ``.lock``        held (``flock``) by the process writing the folder; the kernel drops it
  when that process dies, which is how ``mlrun runs`` tells a live run from a dead one
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from mlrun.errors import UsageError
from mlrun.files import LockHeld, atomic_write, atomic_write_text, file_lock, nearest_existing

RECIPE_FILE = "recipe.toml"
STATUS_FILE = "run.json"
METRICS_FILE = "metrics.csv"
WEIGHTS_FILE = "model.pt"
BEST_WEIGHTS_FILE = "best.pt"
STEPS_FILE = "steps.csv"
LOCK_FILE = ".lock"
#: What atomic_write leaves behind when its process is killed mid-write.
_STALE_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


@dataclass
class RunStatus:
    """``run.json``: what a run is doing or did, who runs it, and with what.

    The engine writes it; ``mlrun runs``, ``predict`` and ``evaluate`` read it. Reading
    is tolerant: run folders from older mlrun versions, hand edits and half-written
    files are normal. A missing or wrongly typed field reads as unset; an unknown one
    is kept in ``extra`` and written back unchanged.
    """

    #: running, completed, interrupted or failed.
    status: str | None = None
    #: The recipe file the run was started from.
    recipe: str | None = None
    started: str | None = None
    #: When each resume began.
    resumed: list[str] = field(default_factory=list)
    finished: str | None = None
    #: The process writing the folder, and its machine.
    pid: int | None = None
    host: str | None = None
    device: str | None = None
    #: train.precision: "32", "bf16" or "16".
    precision: str | None = None
    #: "memory" or "loader", and why.
    data_path: str | None = None
    data_path_reason: str | None = None
    #: Python, torch, mlrun and each plugin distribution that provided a component.
    versions: dict[str, str] = field(default_factory=dict)
    #: world_size, backend, batch sizes; at the end rank_weights_sha256 and ranks_in_sync.
    distributed: dict[str, Any] | None = None
    #: The last epoch's metrics row, once the run completed.
    final: dict[str, Any] | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object; unset fields are left out, as older runs left them out."""
        known = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in known.items() if v not in (None, [], {})}, **self.extra}

    def to_json(self) -> str:
        """The text of ``run.json``."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: object) -> RunStatus:
        """Read a parsed ``run.json``; never raises (anything but an object reads as empty)."""
        if not isinstance(data, dict):
            return cls()
        known = {f.name for f in fields(cls)} - {"extra"}
        found: dict[str, Any] = {name: value for name, value in data.items() if name in known
                                 and _fits(name, value)}  # fmt: skip
        extra = {name: value for name, value in data.items() if name not in known}
        return cls(**found, extra=extra)

    @classmethod
    def from_json(cls, text: str) -> RunStatus:
        """Parse ``run.json``'s text; only invalid JSON raises (``json.JSONDecodeError``)."""
        return cls.from_dict(json.loads(text))


def _fits(name: str, value: object) -> bool:
    """Whether a run.json value has the type its field needs (a hand-edited file may not)."""
    if name == "pid":
        return isinstance(value, int) and not isinstance(value, bool)
    if name in ("resumed", "warnings"):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if name == "versions":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if name in ("distributed", "final"):
        return isinstance(value, dict)
    return isinstance(value, str)


#: run.json ``versions`` keys that are the software around a run, not plugin distributions.
NON_PLUGIN_VERSIONS = frozenset({"python", "torch", "torchvision", "mlrun"})


def recorded_plugins(folder: Path) -> dict[str, str]:
    """The plugin distributions a run used, as its run.json records them (name: version).

    Empty when the folder has no readable run.json: this is only ever a hint.
    """
    try:
        status = RunFolder(Path(folder)).read_status()
    except UsageError:
        return {}
    return {name: version for name, version in status.versions.items() if name not in NON_PLUGIN_VERSIONS}


class RunFolder:
    """A run's folder and the files in it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, output_dir: str | Path, run_name: str) -> RunFolder:
        """Make a new, uniquely named run folder under ``output_dir``."""
        output_dir = Path(output_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        # Validation refuses unsafe names; this holds even for a caller that skipped it.
        probe = (output_dir / f"{run_name}-{stamp}").resolve()
        if probe.parent != output_dir.resolve() or run_name.startswith("."):
            raise UsageError(
                f"run name {run_name!r} would put the run folder outside {output_dir}",
                problems=["use letters, digits, '-', '_' and '.' (not first): train.run_name=NAME"],
            )
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
    def owner() -> dict[str, Any]:
        """Who writes a run folder now, for run.json: pid and host."""
        return {"pid": os.getpid(), "host": socket.gethostname()}

    @staticmethod
    def check_writable(output_dir: str | Path) -> None:
        """Raise a UsageError now if run folders cannot be created under ``output_dir``."""
        folder = Path(output_dir)
        existing = nearest_existing(folder)
        if existing.exists() and not existing.is_dir():
            # A file in the way is not a permissions problem: say so, or chmod is the wrong fix.
            where = f"output folder {folder}"
            if existing != folder:
                where += f" is not writable: {existing}"
            raise UsageError(
                f"{where} is a file, not a folder",
                problems=["choose a folder for the runs: train.output_dir=DIR (or move the file away)"],
            )
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(
                f"output folder {folder} is not writable ({existing} does not allow it)",
                problems=["choose a writable folder: train.output_dir=DIR"],
            )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this folder for writing; a second process is refused (nothing is written)."""
        try:
            with file_lock(self.path / LOCK_FILE, wait=False, what=f"run folder {self.path}"):
                yield
        except LockHeld as exc:
            status = self.read_status() if (self.path / STATUS_FILE).is_file() else RunStatus()
            who = f" (pid {status.pid} on {status.host or '?'})" if status.pid is not None else ""
            raise UsageError(
                f"{self.path} is being written by another mlrun process{who}",
                problems=["wait for that run to finish, or stop it (Ctrl-C) and resume again"],
            ) from exc

    def writer_alive(self) -> bool | None:
        """Whether a process holds this folder's lock: True, False, or None when unknown."""
        import fcntl

        try:
            handle = os.open(self.path / LOCK_FILE, os.O_RDONLY)
        except OSError:
            return None  # never locked (a run from an older mlrun) or unreadable
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return exc.errno in (errno.EAGAIN, errno.EACCES) or None
        finally:
            os.close(handle)  # also releases the probe's own lock
        return False

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temporary files left by a process killed while writing (call with the lock held)."""
        removed = []
        for child in self.path.iterdir():
            if _STALE_TEMP.match(child.name) and child.is_file():
                with contextlib.suppress(FileNotFoundError):
                    child.unlink()
                    removed.append(child)
        return removed

    def write_recipe(self, resolved: Mapping[str, Any], header: str) -> None:
        """Save the resolved recipe as TOML, with a comment header."""
        atomic_write_text(self.path / RECIPE_FILE, header + tomli_w.dumps(dict(resolved)))

    def write_status(self, status: RunStatus) -> None:
        """Save ``run.json``."""
        atomic_write_text(self.path / STATUS_FILE, status.to_json())

    def write_metrics(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Save every epoch's metrics as CSV (rewritten whole each time, so it is never torn)."""
        if not rows:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path / METRICS_FILE, buffer.getvalue())

    def read_status(self) -> RunStatus:
        """Load ``run.json`` (an empty status if the run never wrote one); unreadable is a UsageError."""
        path = self.path / STATUS_FILE
        if not path.exists():
            return RunStatus()
        try:
            return RunStatus.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path} is unreadable ({exc}); is this an mlrun run folder?") from exc

    def write_step_losses(self, rows: Sequence[Sequence[float]]) -> None:
        """Save every step as ``steps.csv``: epoch, step, training loss, learning rate, gradient norm.

        The learning rate is the one the step used; the gradient norm (before clipping) is
        measured only with ``train.clip_grad_norm``, and only on the batch that ends an
        accumulation window: elsewhere the cell is empty.
        """
        lines = ["epoch,step,train_loss,lr,grad_norm"]
        for epoch, step, loss, *rest in rows:
            lr, norm = (list(rest) + [float("nan"), float("nan")])[:2]
            cells = [f"{int(epoch)}", f"{int(step)}", repr(float(loss)), "" if lr != lr else repr(float(lr))]
            lines.append(",".join([*cells, "" if norm != norm else repr(float(norm))]))
        atomic_write_text(self.path / STEPS_FILE, "\n".join(lines) + "\n")

    def save_weights(self, state_dict: Mapping[str, Any], *, best: bool = False) -> None:
        """Save the model's ``state_dict`` as ``model.pt`` (the final weights) or ``best.pt``."""
        import torch

        name = BEST_WEIGHTS_FILE if best else WEIGHTS_FILE
        atomic_write(self.path / name, lambda out: torch.save(dict(state_dict), out))
