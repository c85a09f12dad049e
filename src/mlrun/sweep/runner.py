"""Run a sweep: up to N trial processes at once, each told to the study when it ends.

The sweep process alone asks the study for trials and tells it their results; each
trial is an ordinary ``mlrun run`` (or ``mlrun resume``) child process with its own
run folder. Children die with the sweep (``PR_SET_PDEATHSIG``: a ``kill -9`` of the
sweep stops them at their next step, with a checkpoint), and ``mlrun sweep --resume``
continues them: finished trials are kept, interrupted ones resume from their
checkpoints, and the asking goes on where it stopped.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mlrun.files import file_lock
from mlrun.sweep import trials
from mlrun.sweep.callback import PRUNED_AT
from mlrun.sweep.study import SweepConfig, decode, host, import_optuna, make_sampler, open_study, suggest

if TYPE_CHECKING:
    import optuna

#: Seconds between looks at the running trials.
POLL_S = 0.1
LOCK_FILE = ".sweep.lock"
#: Exit status of an interrupted run (mlrun's own).
INTERRUPTED = 130


@dataclass
class Job:
    """A running trial process."""

    number: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SweepRunner:
    """Runs the trials of one sweep folder."""

    def __init__(
        self, folder: Path, config: SweepConfig, base: dict[str, Any], workers: int, echo: Callable[[str], None]
    ) -> None:
        self.folder, self.config, self.base, self.workers, self.echo = folder, config, base, workers, echo
        self.me = str(folder.resolve())

    def run(self, *, create: bool) -> int:
        """Run trials until the study has its number of trials; returns the exit status."""
        with file_lock(self.folder / LOCK_FILE, wait=False, what=f"the sweep folder {self.folder}"):
            study = open_study(self.config, self.folder, create=create)
            return self._loop(study)

    def _loop(self, study: optuna.Study) -> int:
        pending = self._interrupted(study)
        running: dict[int, Job] = {}
        try:
            while True:
                while len(running) < self.workers:
                    resuming = bool(pending)
                    job = self._resume(study, pending.pop(0)) if resuming else self._next(study)
                    if job is not None:
                        running[job.number] = job
                    elif not resuming:
                        break  # the study has all its trials
                if not running:
                    return 0
                time.sleep(POLL_S)
                for number, job in list(running.items()):
                    if job.process.poll() is not None:
                        del running[number]
                        self._finish(study, job)
        except KeyboardInterrupt:
            # The trials got the same Ctrl-C: each stops at a checkpoint. Wait for them to finish writing.
            for job in running.values():
                job.process.wait()
                job.log.close()
            self.echo(f"interrupted; continue with: mlrun sweep --resume {self.folder}")
            return INTERRUPTED

    def _asked(self, study: optuna.Study) -> int:
        optuna = import_optuna()
        return sum(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))

    def _next(self, study: optuna.Study) -> Job | None:
        """Ask the study for a new trial and start it (None when the sweep has all its trials)."""
        if self._asked(study) >= self.config.spec.trials:
            return None
        study.sampler = make_sampler(self.config.spec, len(study.get_trials(deepcopy=False)))
        trial = study.ask()
        trial.set_user_attr("sweep_dir", self.me)
        trial.set_user_attr("host", host())
        values = suggest(trial, self.config.spec.space)
        trials.write_trial_recipe(self.folder, self.base, trial.number, values)
        shown = " ".join(f"{k}={trials.toml_value(v)}" for k, v in values.items())
        self.echo(f"trial {trial.number}: {shown}")
        return self._start(trial.number, None)

    def _interrupted(self, study: optuna.Study) -> list[int]:
        """This folder's trials that were running when the sweep stopped."""
        optuna = import_optuna()
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return [t.number for t in running if t.user_attrs.get("sweep_dir") == self.me]

    def _resume(self, study: optuna.Study, number: int) -> Job | None:
        """Continue an interrupted trial: tell it if it ended, resume its checkpoint, else start it again."""
        frozen = study.get_trials(deepcopy=False)[number]
        path = trials.run_folder(self.folder, number)
        if path is not None and trials.writer_alive(path):
            self.echo(f"trial {number}: {path} is still being written by another process; left to it")
            return None
        done = path is not None and trials.run_status(path).status == "completed"
        if PRUNED_AT in frozen.user_attrs or done:
            self._tell(study, number, 0 if done else 1)
            return None
        if path is not None and not trials.can_resume(path):
            trials.set_aside(self.folder, path)  # nothing trained yet worth keeping: start over
            path = None
        if path is None:
            values = decode(frozen.params, self.config.spec.space)
            trials.write_trial_recipe(self.folder, self.base, number, values)
        self.echo(f"trial {number}: {'resuming ' + path.name if path else 'starting again'}")
        return self._start(number, path)

    def _start(self, number: int, resume_from: Path | None) -> Job:
        log_path = self.folder / trials.LOGS_DIR / f"{trials.trial_name(number)}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            trials.command(self.folder, number, resume_from),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads in the sweep process
        )  # fmt: skip
        return Job(number, process, log, time.monotonic())

    def _finish(self, study: optuna.Study, job: Job) -> None:
        job.log.close()
        code = job.process.returncode
        if code in (INTERRUPTED, -signal.SIGINT, -signal.SIGTERM):
            self.echo(f"trial {job.number}: interrupted (resume with mlrun sweep --resume {self.folder})")
            return
        self._tell(study, job.number, code, time.monotonic() - job.started)

    def _tell(self, study: optuna.Study, number: int, code: int, seconds: float | None = None) -> None:
        """Record a trial's end in the study: completed with its objective, pruned or failed."""
        optuna = import_optuna()
        state = optuna.trial.TrialState
        frozen = study.get_trials(deepcopy=False)[number]
        path = trials.run_folder(self.folder, number)
        values = trials.objective_values(path, self.config.objective) if path else []
        took = f", {seconds:.0f} s" if seconds is not None else ""
        name = self.config.objective
        if PRUNED_AT in frozen.user_attrs:
            study.tell(number, state=state.PRUNED)
            self.echo(
                f"trial {number}: pruned after epoch {frozen.user_attrs[PRUNED_AT]} ({name} {values[-1]:.4f}{took})"
            )
        elif code == 0 and (value := trials.best(values, self.config.direction)) is not None:
            study.tell(number, value)
            self.echo(f"trial {number}: {name} {value:.4f} ({len(values)} epochs{took})")
        else:
            study.tell(number, state=state.FAIL)
            log = self.folder / trials.LOGS_DIR / f"{trials.trial_name(number)}.log"
            self.echo(f"trial {number}: failed (exit status {code}); see {log}")
