"""The sweep folder's ``sweep.json`` and the Optuna study it names.

Storage: by default a journal file in the sweep folder (``study.journal``): nothing to
start, and Optuna's file lock makes it safe for many local processes (the trial
processes report their epochs to it while the sweep process asks and tells). With
``--storage URL`` (``postgresql://...``, ``mysql://...``, ``sqlite:///...``) any number
of machines join one study; the URL is opened before any trial starts, and one that
cannot be reached is refused.

Reproducibility: a grid's points are enqueued once, in order, when the study is
created; a random or TPE sampler is re-seeded with ``seed + trial number`` before
each trial is asked for. Trial N's values then depend only on the seed and the trials
before it, never on which process asks or whether the sweep was resumed.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrun.errors import UsageError
from mlrun.files import atomic_write_text
from mlrun.sweep.space import Dimension, SweepSpec

if TYPE_CHECKING:
    import optuna

SWEEP_FILE = "sweep.json"
JOURNAL_FILE = "study.journal"
INSTALL_OPTUNA = "pip install 'torch-mlrun[sweep]' (or: pip install optuna)"


@dataclass
class SweepConfig:
    """``sweep.json``: everything a sweep (or a resume, or a trial's callback) needs to find its study."""

    recipe: str
    study: str
    #: A database URL, or None for the journal file in the sweep folder.
    storage: str | None
    objective: str
    direction: str
    threads: int
    spec: SweepSpec

    def to_json(self) -> str:
        """The file's text."""
        data = {**self.__dict__, "spec": self.spec.to_dict()}
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def read(cls, folder: Path) -> SweepConfig:
        """Read ``folder/sweep.json``; a folder without one is not a sweep folder."""
        path = folder / SWEEP_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["spec"] = SweepSpec.from_dict(data["spec"])
            return cls(**data)
        except FileNotFoundError:
            raise UsageError(f"{folder} is not a sweep folder: {path} is missing") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}: cannot read the sweep ({exc})") from exc

    def write(self, folder: Path) -> None:
        """Write ``folder/sweep.json`` atomically."""
        atomic_write_text(folder / SWEEP_FILE, self.to_json())


def import_optuna() -> Any:
    """Optuna, or a clear error saying how to install it."""
    try:
        import optuna
    except ImportError as exc:
        raise UsageError(f"mlrun sweep needs Optuna ({exc}): {INSTALL_OPTUNA}") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(url: str | None, folder: Path) -> Any:
    """The study's storage; an unreachable URL is a :class:`UsageError` naming it."""
    optuna = import_optuna()
    if url is None:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(folder / JOURNAL_FILE)))
    try:
        # Connects (and creates Optuna's tables) now, so a bad URL stops the sweep before any trial.
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except Exception as exc:  # noqa: BLE001 - drivers raise anything: each is "cannot be reached"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(
            f"--storage {_hidden_password(url)}: cannot be reached ({reason})",
            problems=[
                "check the host, port, database name and credentials, and that the database driver is "
                "installed (PostgreSQL: pip install psycopg2-binary); without --storage the study is a "
                "file in the sweep folder. See docs/sweeps.md"
            ],
        ) from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    # A server that does not answer must not stall the sweep for minutes.
    return {"connect_args": {"connect_timeout": 10}} if url.startswith(("postgresql", "mysql")) else {}


def _hidden_password(url: str) -> str:
    """The URL as shown in errors: ``postgresql://user:***@host/db``."""
    head, sep, rest = url.partition("://")
    if sep and "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{head}://{user}:***@{rest.split('@', 1)[1]}"
    return url


def make_pruner(spec: SweepSpec) -> Any:
    """The spec's pruner: Optuna's median rule on per-epoch reports, or none."""
    optuna = import_optuna()
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.prune_startup_trials, n_warmup_steps=spec.prune_warmup_epochs
        )
    return optuna.pruners.NopPruner()


def make_sampler(spec: SweepSpec, number: int) -> Any:
    """The sampler that picks trial ``number``'s values, seeded by ``seed + number``."""
    optuna = import_optuna()
    seed = spec.seed + number
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)  # a grid's points are enqueued: this never picks


def open_study(config: SweepConfig, folder: Path, *, create: bool) -> optuna.Study:
    """Load the sweep's study (``create``: make it, enqueueing a grid's points, unless it exists)."""
    optuna = import_optuna()
    storage = open_storage(config.storage, folder)
    pruner = make_pruner(config.spec)
    names = {summary.study_name for summary in optuna.get_all_study_summaries(storage)}
    if config.study in names or not create:
        if config.study not in names:
            raise UsageError(f"{folder}: the study '{config.study}' is not in its storage; was it deleted?")
        study = optuna.load_study(study_name=config.study, storage=storage, pruner=pruner)
        _check_same_search(study, config)
        return study
    try:
        study = optuna.create_study(study_name=config.study, storage=storage, direction=config.direction, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:  # another machine created it a moment ago: join it
        return open_study(config, folder, create=False)
    study.set_user_attr("mlrun_sweep", _search_record(config))
    if config.spec.sampler == "grid":
        for point in config.spec.grid_points()[: config.spec.trials]:
            study.enqueue_trial({key: encode(value) for key, value in point.items()})
    return study


def _search_record(config: SweepConfig) -> dict[str, Any]:
    return {"objective": config.objective, "direction": config.direction, "spec": config.spec.to_dict()}


def _check_same_search(study: optuna.Study, config: SweepConfig) -> None:
    """A process joining a study must search the same space for the same objective."""
    recorded = study.user_attrs.get("mlrun_sweep")
    if recorded is not None and json.dumps(recorded, sort_keys=True) != json.dumps(
        _search_record(config), sort_keys=True
    ):
        raise UsageError(
            f"the study '{config.study}' already holds a different sweep (space, sampler or objective); "
            "join it with the same recipe and values, or give another --study name"
        )


def encode(value: Any) -> Any:
    """A choice as Optuna stores it: numbers, strings and booleans as they are, lists as TOML text."""
    from mlrun.sweep.check import toml_value

    return value if isinstance(value, (bool, int, float, str)) else toml_value(value)


def suggest(trial: optuna.Trial, space: list[Dimension]) -> dict[str, Any]:
    """Ask the trial for a value of every dimension; returns them decoded (lists back as lists)."""
    values: dict[str, Any] = {}
    for dim in space:
        if dim.kind == "choice":
            chosen = trial.suggest_categorical(dim.key, [encode(v) for v in dim.values])
            values[dim.key] = next(v for v in dim.values if encode(v) == chosen)
        elif dim.kind == "int":
            values[dim.key] = trial.suggest_int(dim.key, dim.values[0], dim.values[1], step=dim.step)
        else:
            low, high = dim.values
            values[dim.key] = trial.suggest_float(dim.key, low, high, log=dim.kind == "log_uniform")
    return values


def decode(params: Mapping[str, Any], space: list[Dimension]) -> dict[str, Any]:
    """A finished trial's stored params as recipe values."""
    values: dict[str, Any] = {}
    for dim in space:
        if dim.key not in params:
            continue
        stored = params[dim.key]
        values[dim.key] = (
            next((v for v in dim.values if encode(v) == stored), stored) if dim.kind == "choice" else stored
        )
    return values


def host() -> str:
    """This machine's name, recorded with each trial it runs."""
    return socket.gethostname()
