"""The mlrun plugin module: the ``mlflow`` logger callback.

Written only against mlrun's public plugin API (``hookimpl``, ``Callback`` and the event
data of :mod:`mlrun.callbacks`). One MLflow run per mlrun run:

- ``on_fit_start``: creates the MLflow run (or reopens it on resume) and logs the resolved
  recipe as params, flattened to the keys a recipe override uses (``optimizer.lr``,
  ``transforms.1.name``), with values written as an override writes them;
- ``on_step_end``: every ``log_every_steps`` optimizer steps, the step's loss, learning
  rate (and gradient norm when clipping), at step = the run's global step; sent in batches;
- ``on_epoch_end``: the epoch's row of ``metrics.csv`` (train loss, every figure, learning
  rate, seconds) at step = the epoch;
- ``on_fit_end``: the run folder's files as artefacts, the status and reason as tags, and
  the MLflow run terminated (FINISHED, FAILED or KILLED).

Resume: the MLflow run id is in :meth:`MlflowLogger.state_dict`, saved in every
checkpoint, so a resumed run goes on logging into the same MLflow run; tags record the
last epoch and step sent, so nothing MLflow already has is sent twice.

MLflow is imported when a run first uses the callback, never when mlrun lists plugins.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from annotated_types import Ge, MinLen

from mlrun import Callback, hookimpl
from mlrun.callbacks import EpochInfo, FitEnd, RunInfo, StepInfo

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: Files of the run folder logged as artefacts at the end of a run, when present.
ARTIFACTS: tuple[str, ...] = ("recipe.toml", "metrics.csv", "steps.csv", "metrics.png", "best.pt", "model.pt")
#: The MLflow run status for each way an mlrun run ends.
MLFLOW_STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
#: Tags saying how far this run's metrics have been sent (a resumed run sends only later ones).
EPOCH_TAG, STEP_TAG = "mlrun.logged_epoch", "mlrun.logged_step"
#: MLflow's limits per log_batch call; and its param value limit when the client does not say.
MAX_PARAMS_PER_BATCH, MAX_METRICS_PER_BATCH, PARAM_LENGTH = 100, 1000, 500
#: Per-step points kept before they are sent (they are also sent at the end of every epoch).
STEP_BUFFER = 500
#: MLflow's informational loggers that would otherwise print while the store is set up.
CHATTY_LOGGERS = ("mlflow.store.db.utils", "alembic")
#: Tracking URI schemes that MLflow stores in a database through SQLAlchemy.
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


class MlflowUnavailable(RuntimeError):
    """MLflow could not be reached or refused a call; the logger logs nothing more this run."""


# ------------------------------------------------------------------ the resolved recipe as params


def flatten(recipe: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(key, value)`` for every setting, keyed as a recipe override names it.

    Tables nest with dots (``optimizer.lr``); a list of tables is indexed from 0 as in an
    override (``transforms.1.mean``); a list of values is one setting; None is left out,
    as in ``recipe.toml``.
    """
    for key, value in recipe.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, f"{path}.")
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            for index, item in enumerate(value):
                yield from flatten(item, f"{path}.{index}.")
        elif value is not None:
            yield path, value


def override_text(value: Any, *, top: bool = True) -> str:
    """A value as a recipe override writes it: a string bare, anything else TOML (``[0.5]``, ``true``)."""
    if isinstance(value, str):
        return value if top else json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(override_text(item, top=False) for item in value) + "]"
    return str(value)


def recipe_params(recipe: Mapping[str, Any], limit: int) -> dict[str, str]:
    """The flattened recipe as MLflow params, each value cut to ``limit`` characters (ending in "...")."""
    params = {}
    for key, value in flatten(recipe):
        text = override_text(value)
        params[key] = text if len(text) <= limit else text[: limit - 3] + "..."
    return params


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------ the callback


class MlflowLogger:
    """Logs one mlrun run into one MLflow run (see the module docstring for what, and when).

    After the first failed MLflow call it raises once (mlrun then warns, records it in
    ``run.json`` and trains on) and logs nothing more for the rest of the run.
    """

    def __init__(
        self, tracking_uri: str, experiment: str, run_name: str, log_artifacts: bool, log_every_steps: int
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.log_artifacts = log_artifacts
        self.log_every_steps = log_every_steps
        #: The MLflow run this mlrun run logs into (saved in checkpoints).
        self.run_id: str | None = None
        #: Per-step points ``(key, value, step)`` not yet sent (saved in checkpoints, so none is lost).
        self.pending: list[tuple[str, float, int]] = []
        self._client: MlflowClient | None = None
        self._logged_epoch = 0
        self._logged_step = 0
        self._off = False

    # ---------------------------------------------------------------- state (saved in every checkpoint)

    def state_dict(self) -> dict[str, Any]:
        """The MLflow run id and the per-step points not yet sent."""
        return {"run_id": self.run_id, "pending": [list(point) for point in self.pending]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """On resume: log into the same MLflow run, sending the points the checkpoint holds."""
        self.run_id = state.get("run_id")
        self.pending = [(str(key), float(value), int(step)) for key, value, step in state.get("pending", [])]

    # ---------------------------------------------------------------- events

    def on_fit_start(self, run: RunInfo) -> None:
        """Create the MLflow run (or reopen the one a resumed run had) and log the recipe."""
        self._guarded(self._start, run)

    def on_step_end(self, run: RunInfo, step: StepInfo) -> None:
        """Every ``log_every_steps`` steps: the step's loss and learning rate (sent in batches)."""
        if self.log_every_steps and step.global_step % self.log_every_steps == 0 and not self._off:
            self.pending += [("step_loss", step.loss, step.global_step), ("step_lr", step.lr, step.global_step)]
            if step.grad_norm is not None:
                self.pending.append(("step_grad_norm", step.grad_norm, step.global_step))
            if len(self.pending) >= STEP_BUFFER:
                self._guarded(self._send_steps)

    def on_epoch_end(self, run: RunInfo, epoch: EpochInfo) -> None:
        """The epoch's row of ``metrics.csv``, at step = the epoch."""
        self._guarded(self._log_epoch, epoch)

    def on_fit_end(self, run: RunInfo, end: FitEnd) -> None:
        """However the run ended: the run folder's files, the status tags, the MLflow run closed."""
        self._guarded(self._finish, run, end)

    # ---------------------------------------------------------------- MLflow calls

    def _guarded(self, action: Any, *args: Any) -> None:
        if self._off:
            return
        try:
            action(*args)
        except Exception as exc:
            self._off = True
            raise MlflowUnavailable(
                f"cannot log to MLflow at {self.tracking_uri!r} ({why(exc)}); nothing more is sent to MLflow in this run"
            ) from exc

    def _connect(self) -> MlflowClient:
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def _start(self, run: RunInfo) -> None:
        self._client = client = self._connect()
        params = recipe_params(run.recipe, param_length_limit())
        if self.run_id is not None and self._reopen(client, params):
            return
        found = client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(self.experiment)
        tags = {"mlrun.run_dir": str(run.run_dir.resolve()), "mlrun.status": "running"}
        created = client.create_run(experiment_id, run_name=self.run_name or run.run_dir.name, tags=tags)
        self.run_id = created.info.run_id
        self._send(params=params)

    def _reopen(self, client: MlflowClient, params: dict[str, str]) -> bool:
        """Continue the MLflow run of a resumed mlrun run; False when the store no longer has it."""
        from mlflow.exceptions import MlflowException

        assert self.run_id is not None
        try:
            previous = client.get_run(self.run_id)
        except MlflowException:
            self.run_id = None
            return False
        tags = previous.data.tags
        self._logged_epoch = int(tags.get(EPOCH_TAG, 0))
        self._logged_step = int(tags.get(STEP_TAG, 0))
        client.update_run(self.run_id, status="RUNNING")
        logged = previous.data.params
        # MLflow refuses to change a param: a setting changed on resume (--force) is kept as a tag.
        changed = {f"mlrun.resumed.{k}": v for k, v in params.items() if k in logged and logged[k] != v}
        new = {k: v for k, v in params.items() if k not in logged}
        self._send(params=new, tags={**changed, "mlrun.status": "running"})
        self._send_steps()  # the points the checkpoint held
        return True

    def _log_epoch(self, epoch: EpochInfo) -> None:
        self._send_steps()
        if epoch.epoch <= self._logged_epoch:  # logged before the run was interrupted and resumed
            return
        values = {"train_loss": epoch.train_loss, **epoch.figures, "lr": epoch.lr, "seconds": epoch.seconds}
        points = [(key, value, epoch.epoch) for key, value in values.items()]
        self._send(metrics=points, tags={EPOCH_TAG: str(epoch.epoch)})
        self._logged_epoch = epoch.epoch

    def _send_steps(self) -> None:
        points = [point for point in self.pending if point[2] > self._logged_step]
        if points:
            last = max(step for _, _, step in points)
            self._send(metrics=points, tags={STEP_TAG: str(last)})
            self._logged_step = last
        self.pending = []

    def _finish(self, run: RunInfo, end: FitEnd) -> None:
        if self._client is None or self.run_id is None:
            return
        self._send_steps()
        tags = {"mlrun.status": end.status, "mlrun.reason": end.reason}
        best = (end.best or {}).items()  # {"monitor": "val.accuracy", "best_epoch": 3, ...}
        tags.update({f"mlrun.best.{key.removeprefix('best_')}": override_text(value) for key, value in best})
        self._send(tags=tags)
        if self.log_artifacts:
            for name in ARTIFACTS:
                if (run.run_dir / name).is_file():
                    self._client.log_artifact(self.run_id, str(run.run_dir / name))
        self._client.set_terminated(self.run_id, MLFLOW_STATUS.get(end.status, "FAILED"))

    def _send(
        self,
        *,
        params: Mapping[str, str] | None = None,
        metrics: Sequence[tuple[str, float, int]] = (),
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """One or more ``log_batch`` calls, within MLflow's limits per call; tags go in the last."""
        from mlflow.entities import Metric, Param, RunTag

        assert self._client is not None and self.run_id is not None
        now = int(time.time() * 1000)
        for chunk in _chunks([Param(k, v) for k, v in (params or {}).items()], MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=list(chunk))
        for chunk in _chunks([Metric(k, float(v), now, s) for k, v, s in metrics], MAX_METRICS_PER_BATCH):
            self._client.log_batch(self.run_id, metrics=list(chunk))
        for chunk in _chunks([RunTag(k, v) for k, v in (tags or {}).items()], MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, tags=list(chunk))


def why(exc: Exception) -> str:
    """The gist of an MLflow error: the OS error of a connection (``[Errno 111] Connection refused``) or its first line."""
    text = str(exc).strip()
    found = re.search(r"\[Errno -?\d+\][^'\")\]]*|Read timed out", text)
    if found:
        return found.group(0).strip()
    first = (text.splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first if len(first) <= 200 else first[:197] + '...'}"


def require_client(tracking_uri: str) -> None:
    """Raise ValueError, saying what to install, when MLflow cannot use ``tracking_uri`` here.

    mlrun reports a factory's ValueError as bad input, before the run trains, with this message.
    """
    needed = {"mlflow": "the mlflow callback needs MLflow's client: pip install mlflow-skinny"}
    if tracking_uri.partition(":")[0].partition("+")[0] in SQL_SCHEMES:
        advice = f"a tracking store in a database ({tracking_uri}) needs SQLAlchemy and Alembic: pip install sqlalchemy alembic"
        needed.update(sqlalchemy=advice, alembic=advice)
    for module, advice in needed.items():
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"{module} is not installed: {advice} (or reinstall mlrun-mlflow, which depends on it)")


def param_length_limit() -> int:
    """The longest param value this MLflow client accepts (500 for clients that do not say)."""
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:
        return PARAM_LENGTH
    return int(MAX_PARAM_VAL_LENGTH)


def mlflow_logger(
    tracking_uri: Annotated[str, MinLen(1)] = "sqlite:///mlruns.db",
    experiment: Annotated[str, MinLen(1)] = "mlrun",
    run_name: str = "",
    log_artifacts: bool = True,
    log_every_steps: Annotated[int, Ge(0)] = 0,
) -> MlflowLogger:
    """Log the run to MLflow: the recipe as params, metrics per epoch, the run folder's files.

    ``tracking_uri``: where runs are stored; the default is a SQLite database in the
    working folder (no server), ``http://host:5000`` is a shared tracking server.
    ``run_name``: the MLflow run's name (default: the run folder's). ``log_every_steps``:
    also log the training loss every that many optimizer steps (0: per epoch only).
    """
    require_client(tracking_uri)  # a missing package stops the run before it trains, unlike an outage
    return MlflowLogger(tracking_uri, experiment, run_name, log_artifacts, log_every_steps)


@hookimpl
def register_callbacks() -> list[Callback]:
    """The MLflow logger."""
    return [
        Callback(
            "mlflow", mlflow_logger, "log params, per-epoch metrics, artefacts and status to MLflow (sqlite:///mlruns.db by default)",
            logger=True, on_error="warn",
        ),
    ]  # fmt: skip
