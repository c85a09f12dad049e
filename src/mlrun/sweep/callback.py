"""The ``sweep_trial`` callback: a sweep trial reports each epoch's objective to its study.

``mlrun sweep`` adds it to every trial's recipe; nobody else needs to. It is registered
with the built-in callbacks (:mod:`mlrun.builtins.callbacks`), so the run folder's
recipe names it, so ``mlrun resume`` of a trial reports to the same
study, and the pruner's decisions rest on the reports in the study's storage, which
outlive any process. A trial the pruner stops ends with :class:`optuna.TrialPruned`
after marking itself ``pruned_at_epoch`` in the study; the sweep then records it as
pruned.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlrun.callbacks import EpochInfo, RunInfo

#: The callback's name in a trial's recipe.
NAME = "sweep_trial"
#: The trial's user attribute that says after which epoch the pruner stopped it.
PRUNED_AT = "pruned_at_epoch"


class TrialReporter:
    """Reports the objective after every epoch and stops the trial when the pruner says so."""

    def __init__(self, trial: int) -> None:
        self.number = trial
        self.trial: Any = None
        self.column = ""

    def on_fit_start(self, run: RunInfo) -> None:
        from mlrun.sweep.study import SWEEP_FILE, SweepConfig, import_optuna, open_study

        folder = run.run_dir.parent  # a trial's run folder lives in its sweep folder
        if not (folder / SWEEP_FILE).is_file():
            return  # moved out of its sweep (or no sweep at all): it trains as a plain run, reporting nowhere
        config = SweepConfig.read(folder)
        optuna = import_optuna()
        study = open_study(config, folder, create=False)
        storage = study._storage  # noqa: SLF001 - Optuna's documented way to a Trial by id
        trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, self.number)  # noqa: SLF001
        self.trial = optuna.trial.Trial(study, trial_id)
        self.column = config.objective.replace(".", "_", 1)

    def on_epoch_end(self, run: RunInfo, epoch: EpochInfo) -> None:
        from mlrun.sweep.study import import_optuna

        value = epoch.figures.get(self.column)
        if self.trial is None or value is None or not math.isfinite(value):
            return  # the pruner sees nothing it cannot compare
        # Reported again after a resume (the same value: the run is bitwise), which Optuna ignores.
        self.trial.report(value, epoch.epoch)
        if epoch.epoch < run.epochs and self.trial.should_prune():
            self.trial.set_user_attr(PRUNED_AT, epoch.epoch)
            raise import_optuna().TrialPruned(f"pruned after epoch {epoch.epoch}: {self.column} = {value:.4f}")
