"""One trial on disk: its recipe, its run folder, its log, and how it turned out.

A trial is an ordinary run: ``recipes/trial-NNNN.toml`` in the sweep folder is the base
recipe with the trial's values set as overrides, its run folder goes into the sweep
folder (``train.output_dir``, ``train.run_name = "trial-NNNN"``), and the
``sweep_trial`` callback reports its epochs to the study.
"""

from __future__ import annotations

import csv
import math
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from mlrun.files import atomic_write_text
from mlrun.runs import METRICS_FILE, STATUS_FILE, RunFolder, RunStatus
from mlrun.sweep.callback import NAME as CALLBACK
from mlrun.sweep.check import toml_value, with_values

RECIPES_DIR = "recipes"
LOGS_DIR = "logs"
#: Where a trial's run folder that never reached a checkpoint goes before the trial starts again.
ABANDONED_DIR = "logs/abandoned"


def trial_name(number: int) -> str:
    """``trial-0007``: the run name (and recipe file stem) of trial 7."""
    return f"trial-{number:04d}"


def write_trial_recipe(folder: Path, base: Mapping[str, Any], number: int, values: Mapping[str, Any]) -> Path:
    """Write the trial's recipe; returns its path."""
    data = with_values(base, values)
    train = data.setdefault("train", {})
    train["output_dir"] = str(folder.resolve())
    train["run_name"] = trial_name(number)
    data["callbacks"] = [*data.get("callbacks", []), {"name": CALLBACK, "trial": number}]
    header = f"# Trial {number} of the sweep in {folder}\n"
    header += "".join(f"#   {key} = {toml_value(value)}\n" for key, value in values.items())
    path = folder / RECIPES_DIR / f"{trial_name(number)}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, header + "\n" + tomli_w.dumps(data))
    return path


def run_folder(folder: Path, number: int) -> Path | None:
    """The trial's run folder in the sweep folder (None before the run created it)."""
    found = sorted(p for p in folder.glob(f"{trial_name(number)}-*") if p.is_dir())
    return found[-1] if found else None


def run_status(path: Path) -> RunStatus:
    """The run's ``run.json`` (empty when it cannot be read yet)."""
    try:
        return RunStatus.from_json((path / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return RunStatus()


def objective_values(path: Path, objective: str) -> list[float]:
    """The objective of every finished epoch, from the run's ``metrics.csv``."""
    column = objective.replace(".", "_", 1)
    try:
        with (path / METRICS_FILE).open(newline="", encoding="utf-8") as handle:
            return [float(row[column]) for row in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError, TypeError):
        return []


def best(values: list[float], direction: str) -> float | None:
    """The best finite value (what ``best.pt`` holds), or None."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if direction == "maximize" else min(finite)


def set_aside(folder: Path, path: Path) -> Path:
    """Move a run folder that has no checkpoint out of the way; the trial starts again from scratch."""
    target = folder / ABANDONED_DIR / f"{path.name}-{int(time.time())}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), str(target))
    return target


def command(folder: Path, number: int, resume_from: Path | None) -> list[str]:
    """The trial's process: ``mlrun run`` of its recipe, or ``mlrun resume`` of its run folder."""
    if resume_from is not None:
        return [sys.executable, "-m", "mlrun", "resume", str(resume_from)]
    return [sys.executable, "-m", "mlrun", "run", str(folder / RECIPES_DIR / f"{trial_name(number)}.toml")]


def can_resume(path: Path) -> bool:
    """Whether the run folder holds a checkpoint to continue from."""
    return (path / "checkpoint.pt").is_file()


def writer_alive(path: Path) -> bool:
    """Whether some process still writes the run folder."""
    return RunFolder(path).writer_alive() is True
