"""What a sweep shows: its trials as a table sorted by the objective, and ``sweep.png``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mlrun.sweep import trials
from mlrun.sweep.study import SweepConfig, decode, import_optuna, open_storage

PLOT_FILE = "sweep.png"


def read_trials(folder: Path) -> tuple[SweepConfig, list[Any]]:
    """The sweep's settings and its study's trials (every machine's, with a shared storage)."""
    optuna = import_optuna()
    config = SweepConfig.read(folder)
    study = optuna.load_study(study_name=config.study, storage=open_storage(config.storage, folder))
    return config, study.get_trials(deepcopy=False)


def _order(config: SweepConfig, trial: Any) -> tuple[int, float, int]:
    state = trial.state.name
    rank = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3}.get(state, 4)
    value = trial.value if trial.value is not None and math.isfinite(trial.value) else math.inf
    sign = -1 if config.direction == "maximize" and value != math.inf else 1
    return rank, sign * value, trial.number


def format_sweep(folder: Path) -> str:
    """``mlrun runs SWEEP_DIR``: TRIAL, STATE, each swept key, EPOCHS, the objective, RUN; best first."""
    from mlrun.cli.output import format_table

    config, found = read_trials(folder)
    keys = [d.key for d in config.spec.space]
    rows = [("TRIAL", "STATE", *keys, "EPOCHS", config.objective.upper(), "RUN")]
    for trial in sorted(found, key=lambda t: _order(config, t)):
        values = decode(trial.params, config.spec.space)
        path = trials.run_folder(folder, trial.number)
        shown = "-" if trial.value is None else f"{trial.value:.4f}"
        rows.append((
            str(trial.number), trial.state.name.lower(),
            *(trials.toml_value(values[k]) if k in values else "-" for k in keys),
            str(len(trial.intermediate_values)), shown, path.name if path else "-",
        ))  # fmt: skip
    done = sum(t.state.name in ("COMPLETE", "PRUNED") for t in found)
    head = f"sweep {folder}: {done} of {config.spec.trials} trials done, {config.direction} {config.objective}"
    return head + "\n" + format_table(rows)


def plot_sweep(folder: Path) -> Path | None:
    """Draw the objective against each swept key (one panel per key) into ``sweep.png``."""
    from mlrun.plots import _new_figure, _save

    config, found = read_trials(folder)
    points = [(decode(t.params, config.spec.space), t.value, t.state.name) for t in found if t.value is not None]
    if not points:
        return None
    dims = config.spec.space
    figure = _new_figure(4.0 * len(dims), 3.4)
    for index, dim in enumerate(dims):
        axes = figure.add_subplot(1, len(dims), index + 1)
        labels = [trials.toml_value(v) for v in dim.values]
        for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):  # a pruned trial: its last epoch's figure
            xs = [values[dim.key] for values, _, s in points if s == state]
            ys = [value for _, value, s in points if s == state]
            if dim.kind == "choice":
                xs = [labels.index(trials.toml_value(x)) for x in xs]
            axes.scatter(xs, ys, marker=marker, color="C0" if state == "COMPLETE" else "0.5", label=state.lower())
        if dim.kind == "choice":
            axes.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        elif dim.kind == "log_uniform":
            axes.set_xscale("log")
        axes.set_xlabel(dim.key)
        axes.set_ylabel(config.objective if index == 0 else "")
        axes.grid(alpha=0.3)
    figure.axes[0].legend(fontsize=8)
    figure.suptitle(f"{folder.name}: {config.objective} per trial ({config.direction})")
    figure.tight_layout()
    path = folder / PLOT_FILE
    _save(figure, path)
    return path
