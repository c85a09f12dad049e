"""List the run folders under an output folder: status, epochs and accuracy of each.

Run folders can be in any state: still running, failed, interrupted, half-written
by a crash or edited by hand. Listing never fails because of one folder: what
cannot be read is shown as such, with the reason in a note below the table.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlrun.errors import UsageError
from mlrun.runs import METRICS_FILE, RECIPE_FILE, STATUS_FILE, WEIGHTS_FILE, RunFolder, RunStatus

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: Status shown for a folder whose run.json is missing or cannot be read.
UNREADABLE = "unreadable"
#: Status shown for a run whose run.json says running but whose process is gone.
DIED = "died"
#: The timestamp RunFolder.create puts at the end of a run folder's name (and a -N suffix).
_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")
#: Files that make a folder look like a run folder.
_RUN_FILES = (STATUS_FILE, RECIPE_FILE, METRICS_FILE, WEIGHTS_FILE)


@dataclass
class RunSummary:
    """What ``mlrun runs`` shows about one run folder."""

    path: Path
    name: str
    status: str
    recipe: str = ""
    epochs_done: int = 0
    #: ``train.epochs`` from the run's recipe.toml, when readable.
    epochs_planned: int | None = None
    best_accuracy: float | None = None
    final_accuracy: float | None = None
    #: The split ``best_accuracy`` comes from: "val" for a run with a validation split (its test
    #: accuracy, in ``final_accuracy``, is then the one of the selected weights), else "test".
    best_split: str = "test"
    #: Why part of the folder could not be read; shown as notes under the table.
    problems: list[str] = field(default_factory=list)


def _sort_key(path: Path) -> tuple[str, int, str]:
    # Oldest first, newest last (next to the prompt), whatever the run names are.
    found = _STAMP.search(path.name)
    if found:
        return found.group(1), int(found.group(2) or 0), path.name
    return "", 0, path.name


def _read_status(folder: Path, summary: RunSummary) -> RunStatus:
    """The folder's run.json; whatever cannot be read is recorded as a problem, never raised."""
    path = folder / STATUS_FILE
    try:
        status = RunStatus.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        summary.problems.append(f"{STATUS_FILE} missing")
        return RunStatus()
    except (OSError, UnicodeDecodeError) as exc:
        summary.problems.append(f"{STATUS_FILE}: cannot read ({getattr(exc, 'strerror', None) or exc})")
        return RunStatus()
    except json.JSONDecodeError as exc:
        summary.problems.append(f"{STATUS_FILE}: invalid JSON (line {exc.lineno}: {exc.msg})")
        return RunStatus()
    except RecursionError:  # JSON nested thousands deep
        summary.problems.append(f"{STATUS_FILE}: nested too deeply to read")
        return RunStatus()
    if status.status is None:
        summary.problems.append(f"{STATUS_FILE}: no status field")
    return status


def _read_metrics(folder: Path, summary: RunSummary) -> list[float]:
    """The accuracy of every epoch (validation, else test), in order; records a problem for unreadable rows."""
    path = folder / METRICS_FILE
    if not path.exists():
        return []  # a run that has not finished an epoch yet: nothing to report
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        summary.problems.append(f"{METRICS_FILE}: cannot read ({getattr(exc, 'strerror', None) or exc})")
        return []
    accuracies = []
    if rows and "val_loss" in rows[0]:
        summary.best_split = "val"
    column = f"{summary.best_split}_accuracy"
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            accuracies.append(float(row[column]))
        except (KeyError, TypeError, ValueError):
            summary.problems.append(f"{METRICS_FILE}: line {number} has no numeric {column}")
            return accuracies  # later rows cannot be trusted to be later epochs
    return accuracies


def _planned_epochs(folder: Path) -> int | None:
    try:
        epochs = tomllib.loads((folder / RECIPE_FILE).read_text(encoding="utf-8"))["train"]["epochs"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        return None  # only decoration for the EPOCHS column; the status tells what matters
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def summarize_run(folder: Path) -> RunSummary:
    """Read one run folder; never raises for a broken or partial folder."""
    summary = RunSummary(path=folder, name=folder.name, status=UNREADABLE)
    status = _read_status(folder, summary)
    if status.status is not None:
        summary.status = status.status
    if summary.status == "running" and RunFolder(folder).writer_alive() is False:
        # run.json says running, but no process holds the folder: it died without a word.
        summary.status = DIED
        who = f" (pid {status.pid} on {status.host or '?'})" if status.pid is not None else ""
        summary.problems.append(
            f"its process{who} ended without finishing (kill -9, crash or power loss); "
            f"resume with: mlrun resume {folder}"
        )
    if status.recipe is not None:
        summary.recipe = status.recipe
    accuracies = _read_metrics(folder, summary)
    if accuracies:
        summary.epochs_done = len(accuracies)
        summary.best_accuracy = max(accuracies)
        summary.final_accuracy = accuracies[-1] if summary.best_split == "test" else _test_accuracy(status)
    else:
        # A run.json's final metrics still tell the result when metrics.csv is gone.
        final = status.final
        if isinstance(final, dict) and isinstance(final.get("test_accuracy"), (int, float)):
            summary.final_accuracy = summary.best_accuracy = float(final["test_accuracy"])
            if isinstance(final.get("epoch"), int):
                summary.epochs_done = final["epoch"]
    summary.epochs_planned = _planned_epochs(folder)
    return summary


def _test_accuracy(status: RunStatus) -> float | None:
    """The test accuracy a run with a validation split reported at its end (None before it ends)."""
    final = status.final
    value = final.get("test_accuracy") if isinstance(final, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def list_runs(output_dir: Path) -> list[RunSummary]:
    """Every run folder under ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.exists():
        raise UsageError(
            f"{output_dir}: no such folder; runs go to train.output_dir (default: runs/), pick it with --dir DIR"
        )
    if not output_dir.is_dir():
        raise UsageError(f"{output_dir}: not a folder; give the folder that holds the run folders")
    try:
        children = list(output_dir.iterdir())
    except OSError as exc:
        raise UsageError(f"{output_dir}: cannot list the folder ({exc.strerror or exc})") from exc
    folders = []
    for child in children:
        if child.name.startswith(".") or not child.is_dir():
            continue  # temporary files of atomic writes, notes, anything that is no run
        # A folder with a run's name pattern counts even when empty (a crash right after
        # creating it); otherwise it needs one of a run's files.
        if _STAMP.search(child.name) or any((child / name).exists() for name in _RUN_FILES):
            folders.append(child)
    return [summarize_run(folder) for folder in sorted(folders, key=_sort_key)]


def _accuracy(value: float | None, label: str = "") -> str:
    """A cell, labelled with its split for a run with a validation split (``val 0.8712``, ``test 0.8650``)."""
    shown = "-" if value is None else f"{value:.4f}"
    return f"{label} {shown}" if label else shown


def format_runs(summaries: Sequence[RunSummary]) -> str:
    """A table (RUN, STATUS, RECIPE, EPOCHS, BEST_ACC, FINAL_ACC), then notes on unreadable files."""
    from mlrun.cli.output import format_table  # the one table layout of every listing command

    if not summaries:
        return "no runs found"
    rows = [("RUN", "STATUS", "RECIPE", "EPOCHS", "BEST_ACC", "FINAL_ACC")]
    for run in summaries:
        labelled = run.best_split == "val"  # BEST_ACC is then the validation accuracy, FINAL_ACC the test one
        epochs = str(run.epochs_done)
        if run.epochs_planned is not None:
            epochs += f"/{run.epochs_planned}"
        rows.append(
            (run.name, run.status, run.recipe or "-", epochs,
             _accuracy(run.best_accuracy, "val" if labelled else ""),
             _accuracy(run.final_accuracy, "test" if labelled else ""))
        )  # fmt: skip
    lines = [format_table(rows)]
    notes = [f"  {run.name}: {problem}" for run in summaries for problem in run.problems]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)
