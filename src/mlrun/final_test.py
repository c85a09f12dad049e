"""The test figures a run reports, and what run.json and the run log say about model selection.

With a validation split the test split is evaluated once, after training, with the
selected weights (``best.pt`` when ``train.monitor`` is set, else the final ones). Without
one every epoch was evaluated on the test split, as before: the last epoch's figures are
reported, and the run says plainly that any selection used the test split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mlrun.runs import BEST_WEIGHTS_FILE, WEIGHTS_FILE

if TYPE_CHECKING:
    from mlrun.trainer import Trainer

#: What the run log and run.json say when no validation split exists.
ON_TEST = (
    "every epoch on the test split (no validation split: train.val_fraction is unset), so any model "
    "selection uses the test split and its figures are optimistic"
)


def evaluation_plan(trainer: Trainer) -> str:
    """The run log's line on which split each evaluation uses."""
    val = trainer.built.val_indices
    if val is None:
        return f"evaluation: {ON_TEST}"
    monitor = trainer.selection.monitor
    weights = f"the best epoch's weights by {monitor} (best.pt)" if monitor else "the final weights"
    if trainer.built.train_indices is None:
        ignored = " (train.val_fraction is ignored)" if trainer.settings.val_fraction is not None else ""
        source = f"the dataset's own validation split ({len(val)} samples){ignored}"
    else:
        source = (
            f"a validation split of {len(val)} training samples (train.val_fraction = {trainer.settings.val_fraction})"
        )
    return f"evaluation: every epoch on {source}; the test split once, at the end, with {weights}"


def final_test(trainer: Trainer) -> dict[str, Any]:
    """The run's test figures (``test_loss``, ``test_accuracy``, ...), and which weights gave them.

    Every rank calls it (the evaluation is sharded). May load ``best.pt`` into the model:
    call it after the final weights are saved.
    """
    if trainer.eval_split == "test":
        figures = trainer.last_figures or trainer.evaluate("test")
        weights, epoch = WEIGHTS_FILE, trainer.position.epoch - 1
    else:
        weights, epoch = WEIGHTS_FILE, trainer.position.epoch - 1
        best = trainer.folder.path / BEST_WEIGHTS_FILE
        if trainer.selection.active and best.is_file():
            state = torch.load(best, map_location=trainer.built.device, weights_only=True)
            trainer.built.model.load_state_dict(state)
            weights, epoch = BEST_WEIGHTS_FILE, trainer.selection.best_epoch or epoch
        figures = trainer.evaluate("test")
    record: dict[str, Any] = {"weights": weights, "epoch": epoch, **trainer.evaluator.row("test", figures)}
    for label, value in figures.items():
        if label != "loss" and label not in trainer.evaluator.scalar:
            record[f"test_{label}"] = value
    return record


def selection_record(trainer: Trainer) -> dict[str, Any]:
    """run.json's account of model selection: which split, which figure, the best epoch, early stopping."""
    record: dict[str, Any] = {"split": trainer.eval_split}
    if trainer.eval_split == "test":
        record["note"] = ON_TEST
    if trainer.selection.active:
        record.update(trainer.selection.record())
    figures = trainer.last_figures if trainer.eval_split == "val" else None
    if figures is not None:  # per-class figures and matrices are stored, not printed: the last epoch's
        stored = {f"val_{k}": v for k, v in figures.items() if k != "loss" and k not in trainer.evaluator.scalar}
        record.update({"last_epoch": trainer.position.epoch - 1, **stored} if stored else {})
    return record
