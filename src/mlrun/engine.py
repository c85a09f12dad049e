"""The engine: run a validated recipe from pre-flight to the final weights.

Pre-flight (:func:`mlrun.build.preflight`), build and probe (:mod:`mlrun.build`),
the run folder (:mod:`mlrun.runs`), then the training loop (:mod:`mlrun.trainer`);
``run.json`` records each stage, including how a run failed.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mlrun import checkpoint, dataset_info, distributed, final_test
from mlrun import resume as resume_policy
from mlrun.build import build, preflight, probe, versions
from mlrun.errors import MlrunError
from mlrun.files import atomic_write_text
from mlrun.recipe import Recipe
from mlrun.runs import RunFolder, RunStatus
from mlrun.stopping import Interrupted, StopRequests
from mlrun.trainer import Trainer

Echo = Callable[[str], None]


@dataclass
class RunResult:
    """What a finished run produced."""

    folder: RunFolder
    metrics: list[dict[str, Any]] = field(default_factory=list)
    #: The test figures the run reports (see :func:`mlrun.final_test.final_test`).
    test: dict[str, Any] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        """The reported test accuracy: after the last epoch, or (with a validation split) of the selected weights."""
        return float(self.test.get("test_accuracy", self.metrics[-1].get("test_accuracy", math.nan)))


def run(
    recipe: Recipe,
    *,
    echo: Echo = print,
    progress: bool | None = None,
    resume: RunFolder | None = None,
    force: bool = False,
) -> RunResult:
    """Build and train a validated recipe, writing (or, with ``resume``, continuing) a run folder.

    With ``resume``, a recipe that differs from the checkpoint's is refused unless
    ``force`` is set and every change can be honoured (see :mod:`mlrun.resume`).
    Under torchrun (WORLD_SIZE > 1) every rank calls this; rank 0 alone prints and writes.
    """
    settings = recipe.train
    group = distributed.join(settings.backend, settings.device, settings.dist_timeout_s)
    try:
        return _run(recipe, echo=echo, progress=progress, resume=resume, force=force, group=group)
    finally:
        distributed.leave(group)


def _run(
    recipe: Recipe,
    *,
    echo: Echo,
    progress: bool | None,
    resume: RunFolder | None,
    force: bool,
    group: distributed.Group | None,
) -> RunResult:
    main = group is None or group.is_main
    if not main:
        echo = _silent
    if resume is None and group is not None:
        resume = _elastic_resume_folder(recipe.train.output_dir, group)
    checked = preflight(recipe, new_run=resume is None and main, local_rank=group.local_rank if group else None)
    with contextlib.ExitStack() as held:
        saved, changes = _open_resume(recipe, resume, force, held, main=main) if resume else (None, [])
        for warning in recipe.warnings:
            echo(f"warning: {warning}")
        world_size = group.world_size if group else 1
        built = build(recipe, checked.device, world_size=world_size, data_path=checked.data_plan.path)
        probe(recipe, built)
        # Denormal floats are orders of magnitude slower on CPUs; late in training many
        # small gradients become denormal and epochs slow down without this.
        torch.set_flush_denormal(recipe.train.flush_denormal)
        folder = resume or _new_run_folder(recipe, group, held)
        show_bar = (sys.stderr.isatty() if progress is None else progress) and main
        trainer = Trainer(recipe, built, folder, checked.data_plan, echo=echo, show_bar=show_bar, group=group)
        if saved is not None:
            trainer.restore(saved, changes)  # refuses a misfit before anything is written
        if changes and main:
            folder.write_recipe(
                recipe.to_dict(), header=f"# Resolved recipe; changed on resume: {', '.join(changes)}\n"
            )
        status = _start_status(recipe, trainer, folder, group, resumed=saved is not None) if main else RunStatus()
        _announce(recipe, trainer, folder, group, echo, resumed=saved is not None)
        return _train(trainer, folder, status, echo=echo, group=group)


def _open_resume(
    recipe: Recipe, folder: RunFolder, force: bool, held: contextlib.ExitStack, *, main: bool
) -> tuple[dict[str, Any], list[str]]:
    """Lock the folder to continue, load its checkpoint, and check the recipe's changes against it."""
    if main:  # held until the run ends: a second writer is refused, not interleaved
        held.enter_context(folder.lock())
        folder.remove_stale_temp_files()
    saved = checkpoint.load(folder.path / checkpoint.CHECKPOINT_FILE)
    changes = resume_policy.check_changes(
        resume_policy.saved_recipe(saved, folder.path), recipe.to_dict(),
        folder=folder.path, force=force, epochs_done=resume_policy.epochs_done(saved),
    )  # fmt: skip
    return saved, changes


def _start_status(
    recipe: Recipe, trainer: Trainer, folder: RunFolder, group: distributed.Group | None, *, resumed: bool
) -> RunStatus:
    """run.json as the run starts (or resumes): status running, who runs it, with what."""
    settings = recipe.train
    if resumed:
        status = folder.read_status()
        status.resumed = [*status.resumed, _now()]
    else:
        status = RunStatus(recipe=str(recipe.path), started=_now())
    owner = RunFolder.owner()
    status.status, status.pid, status.host = "running", owner["pid"], owner["host"]
    status.device, status.precision = str(trainer.built.device), trainer.settings.precision
    status.data_path, status.data_path_reason = trainer.data_plan.path, trainer.data_plan.reason
    status.extra["threads"] = trainer.threads  # intra-op CPU threads per process (train.threads)
    status.extra.update(dataset_info.status_fields(recipe.dataset.component, trainer.built.train_set))
    status.versions = versions(recipe)
    if group is not None:
        status.distributed = {
            "world_size": group.world_size, "backend": group.backend,
            "batch_size_per_process": settings.batch_size,
            "global_batch_size": settings.batch_size * group.world_size,
        }  # fmt: skip
    status.error, status.finished, status.warnings = None, None, []  # left from the run's last attempt
    status.extra.pop("callback_warnings", None)
    folder.write_status(status)
    return status


def _announce(
    recipe: Recipe,
    trainer: Trainer,
    folder: RunFolder,
    group: distributed.Group | None,
    echo: Echo,
    *,
    resumed: bool,
) -> None:
    """The run log's opening lines: what trains on what, where, and how the data flows."""
    settings, built, p = recipe.train, trainer.built, trainer.position
    where = (
        f"resuming at epoch {p.epoch}, step {p.step}"
        if resumed
        else f"{settings.epochs} epoch{'s' if settings.epochs != 1 else ''}"
    )
    val = "" if built.val_indices is None else f"{len(built.val_indices)} validation / "
    echo(
        f"training {recipe.model.component.name} on {recipe.dataset.component.name} "
        f"({built.train_size} train / {val}{len(built.test_set)} test samples) on {built.device}, "
        f"{where}; run folder: {folder.path}"
    )
    echo(f"data path: {trainer.data_plan.path} ({trainer.data_plan.reason})")
    for line in dataset_info.notes(built.train_set, built.test_set):  # classes, decoding, skipped images
        echo(line)
    echo(final_test.evaluation_plan(trainer))
    if group is not None:
        echo(
            f"distributed: {group.world_size} processes ({group.backend}); batch size "
            f"{settings.batch_size} per process, {settings.batch_size * group.world_size} in all"
        )


def _train(
    trainer: Trainer,
    folder: RunFolder,
    status: RunStatus,
    *,
    echo: Echo,
    group: distributed.Group | None,
) -> RunResult:
    """Train, then write the final weights and status; a failure is recorded in run.json."""
    main = group is None or group.is_main
    result = RunResult(folder)
    completed = False
    try:
        with StopRequests(echo) as stop:
            result.metrics = trainer.fit(stop)
            stop.finishing = True
            if group is not None:
                _check_ranks_agree(trainer, status, group)
            with trainer.callbacks.evaluation_weights():  # ema's, when it is asked to give the weights
                if main:
                    folder.save_weights(trainer.built.model.state_dict())
                result.test = final_test.final_test(trainer)  # every rank: the evaluation is sharded
            if main:  # drawn before on_fit_end, so that loggers can upload it
                _plot_after_weights(folder, echo)
            _end_callbacks(trainer, status, None)
            if main:
                status.status, status.finished = "completed", _now()
                scalar_test = {
                    k: v for k, v in result.test.items() if k.startswith("test_") and not isinstance(v, list)
                }
                status.final = {**(result.metrics[-1] if result.metrics else {}), **scalar_test}
                status.extra["test"] = result.test
                status.extra["selection"] = final_test.selection_record(trainer)
                status.warnings = list(trainer.warnings)
                folder.write_status(status)
                completed = True  # from here on, nothing can make this run anything but complete
    except KeyboardInterrupt:
        if not completed:
            _record_failure(trainer, folder, status, KeyboardInterrupt(), echo, main=main)
            raise
    except BaseException as exc:
        if completed:
            raise
        _record_failure(trainer, folder, status, exc, echo, main=main)
        if isinstance(exc, Exception) and not isinstance(exc, MlrunError):
            raise MlrunError(
                f"training failed in epoch {trainer.position.epoch}: {type(exc).__name__}: {exc}",
                problems=[f"the run folder {folder.path} records the failure (status: failed)"],
            ) from exc
        raise
    if main and group is not None:  # the job is done: no elastic restart will need to find it
        with contextlib.suppress(OSError):
            _elastic_pointer(trainer.settings.output_dir).unlink()
    if trainer.selection.stopped_at is not None:
        echo(trainer.selection.stop_reason())
    weights = "" if trainer.eval_split == "test" else f" with {result.test['weights']} (epoch {result.test['epoch']})"
    echo(f"done: test_accuracy {result.final_accuracy:.4f}{weights}; weights and metrics in {folder.path}")
    return result


def _check_ranks_agree(trainer: Trainer, status: RunStatus, group: distributed.Group) -> None:
    """Record (on rank 0) each rank's weights and validation split digests: they must all be equal."""
    digests = group.gather(checkpoint.weights_digest(trainer.built.model))
    # Every rank computed the validation split itself: the same indices, or the figures lie.
    splits = group.gather(checkpoint.split_digest(trainer.built.val_indices))
    if group.is_main and status.distributed is not None:
        status.distributed.update(rank_weights_sha256=digests, ranks_in_sync=len(set(digests)) == 1)
        if trainer.built.val_indices is not None:
            status.distributed["rank_val_split_sha256"] = splits


def _record_failure(
    trainer: Trainer, folder: RunFolder, status: RunStatus, exc: BaseException, echo: Echo, *, main: bool
) -> None:
    """Mark the run interrupted or failed in run.json, keeping the steps and the plot so far."""
    if main and trainer.position.metrics:  # drawn before on_fit_end, so that loggers can upload it
        _plot_metrics(folder, echo)
    _end_callbacks(trainer, status, exc)
    if not main:
        return
    interrupted = isinstance(exc, (KeyboardInterrupt, Interrupted))
    status.status, status.finished = "interrupted" if interrupted else "failed", _now()
    status.error = exc.render() if isinstance(exc, MlrunError) else f"{type(exc).__name__}: {exc}"
    status.warnings = list(trainer.warnings)
    _write_status_after_failure(folder, status)
    with contextlib.suppress(MlrunError):  # the steps up to the failure, NaN step included
        folder.write_step_losses(trainer.position.step_losses)


def _plot_after_weights(folder: RunFolder, echo: Echo) -> None:
    """Draw metrics.png once the weights are saved: an interrupt now costs the plot, not the run."""
    try:
        _plot_metrics(folder, echo)
    except KeyboardInterrupt:
        echo(f"warning: interrupted while drawing {folder.path / 'metrics.png'}; the run is complete")


def _end_callbacks(trainer: Trainer, status: RunStatus, exc: BaseException | None) -> None:
    """``on_fit_end`` (once, however the run ends); a warned logger's errors go to run.json."""
    warned = trainer.callbacks.end(trainer.selection, exc)
    if warned:
        status.extra["callback_warnings"] = warned


def _silent(line: str) -> None:
    """Ranks other than 0 print nothing."""


def _new_run_folder(recipe: Recipe, group: distributed.Group | None, held: contextlib.ExitStack) -> RunFolder:
    """Rank 0 creates, locks and fills a new run folder; every rank learns its path."""
    if group is not None and not group.is_main:
        return RunFolder(Path(group.broadcast(None)))
    folder = RunFolder.create(recipe.train.output_dir, recipe.run_name)
    held.enter_context(folder.lock())
    folder.write_recipe(
        recipe.to_dict(),
        header=f"# Resolved recipe of {recipe.path}; rerun with: mlrun {folder.path / 'recipe.toml'}\n",
    )
    if os.environ.get("TORCHELASTIC_RUN_ID"):  # lets an elastic restart find the run to resume
        atomic_write_text(_elastic_pointer(recipe.train.output_dir), str(folder.path))
    if group is not None:
        group.broadcast(str(folder.path))
    return folder


def _elastic_pointer(output_dir: str) -> Path:
    return Path(output_dir) / f".elastic-{os.environ.get('TORCHELASTIC_RUN_ID', '')}"


def _elastic_resume_folder(output_dir: str, group: distributed.Group) -> RunFolder | None:
    """After torchrun restarted the workers (--max-restarts), the run to continue, if any."""
    found = None
    if group.is_main and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        pointer = _elastic_pointer(output_dir)
        if pointer.is_file():
            candidate = Path(pointer.read_text().strip())
            if (candidate / checkpoint.CHECKPOINT_FILE).is_file():
                found = str(candidate)
    found = group.broadcast(found)
    return RunFolder(Path(found)) if found else None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _write_status_after_failure(folder: RunFolder, status: RunStatus) -> None:
    # The original error matters more than a second one (e.g. the disk is still full).
    try:
        folder.write_status(status)
    except MlrunError:
        pass


def _plot_metrics(folder: RunFolder, echo: Echo) -> None:
    """Draw metrics.png from metrics.csv; a plotting problem never fails a run.

    It runs in a short child process: matplotlib then never enters the training
    process, whose memory stays that of the training itself.
    """
    result = subprocess.run(
        [sys.executable, "-m", "mlrun.plots", str(folder.path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        echo(f"warning: could not draw {folder.path / 'metrics.png'}: {reason}")
