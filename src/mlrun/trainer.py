"""The classic training loop over built components, with checkpoints and clean stops.

For each epoch and batch: forward, loss, zero_grad, backward, step; then evaluation
under ``torch.no_grad()`` with ``model.eval()``. The loop can stop after any step
(SIGINT/SIGTERM/SIGHUP, a non-finite loss) and continue bitwise-identically from
its checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch

from mlrun import batches, checkpoint, distributed, trainer_state
from mlrun import resume as resume_policy
from mlrun.build import Built
from mlrun.callback_runner import Callbacks, run_info
from mlrun.errors import MlrunError
from mlrun.evaluator import Evaluator, evaluate
from mlrun.metrics import Value
from mlrun.precision import Precision
from mlrun.recipe import Recipe
from mlrun.runs import RunFolder
from mlrun.selection import Selection
from mlrun.settings import resolve_threads
from mlrun.splits import shard
from mlrun.stopping import Interrupted, NonFiniteLoss, StopRequests, non_finite_advice
from mlrun.trainer_state import Position

Echo = Callable[[str], None]
__all__ = ["Trainer", "evaluate"]


class Trainer:
    """Runs the classic loop over built components, writing checkpoints into a run folder."""

    def __init__(
        self,
        recipe: Recipe,
        built: Built,
        folder: RunFolder,
        data_plan: batches.DataPlan,
        *,
        echo: Echo,
        show_bar: bool,
        group: distributed.Group | None = None,
    ) -> None:
        self.recipe, self.built, self.folder = recipe, built, folder
        self.settings = recipe.train
        self.echo, self.show_bar = echo, show_bar
        self.group = group
        self.writes = group is None or group.is_main  # rank 0 alone writes the run folder
        # Training steps go through DDP (which averages gradients across ranks);
        # evaluation and checkpoints use the plain model, identical on every rank.
        self.forward_model: torch.nn.Module = built.model
        if group is not None:
            from torch.nn.parallel import DistributedDataParallel

            ids = [built.device.index] if built.device.type == "cuda" else None
            self.forward_model = DistributedDataParallel(built.model, device_ids=ids)
        if self.settings.compile:
            self.forward_model = cast(torch.nn.Module, torch.compile(self.forward_model))
        self.data_plan = data_plan
        self.train_source = batches.batch_source(recipe, built.train_set, data_plan, train=True)
        self.test_source = batches.batch_source(recipe, built.test_set, data_plan, train=False)
        self.order = batches.EpochOrder(built.train_size, shuffle=self.settings.shuffle, seed=self.settings.seed)
        classes = len(getattr(recipe.dataset.component, "classes", ()))
        self.evaluator = Evaluator(recipe, built.num_classes or classes, group)
        #: The split evaluated every epoch: validation when there is one, else (as before) test.
        self.eval_split = "val" if built.val_indices is not None else "test"
        if built.val_indices is not None:
            self.val_source = batches.batch_source(recipe, built.val_set, data_plan, train=False)
        self.selection = Selection.from_settings(self.settings, recipe.metrics)
        self.last_figures: dict[str, Value] | None = None  # of the latest epoch's evaluation
        self.position = Position()
        self.precision = Precision(self.settings.precision, built.device)
        self.step_lr, self.grad_norm = math.nan, math.nan  # of the latest step, for steps.csv
        self.recipe_record = resume_policy.recipe_record(recipe.to_dict())
        self.warnings: list[str] = []
        #: Intra-op CPU threads while :meth:`fit` runs (``train.threads``; recorded in run.json).
        self.threads = resolve_threads(self.settings.threads)
        #: float32, one process, one batch per window, no clipping: :meth:`_step` runs the bare
        #: five steps (the same operations the general path runs for these settings).
        s = self.settings
        self.plain_steps = s.precision == "32" and group is None and s.accumulate_steps == 1 and not s.clip_grad_norm
        self.callbacks = Callbacks.build(recipe, run_info(recipe, folder.path, built, group))

    # ---------------------------------------------------------------- checkpoints

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here (call on every rank: it gathers)."""
        return trainer_state.capture(self)

    def restore(self, state: dict[str, Any], changed: Sequence[str] = ()) -> None:
        """Continue from a :meth:`state` loaded from a checkpoint; a misfit is a UsageError.

        ``changed``: the recipe keys a forced resume changes; see :func:`mlrun.trainer_state.restore`.
        """
        trainer_state.restore(self, state, changed)

    def save_checkpoint(self) -> None:
        """Write the checkpoint atomically; a failure names the path and the epoch it was for."""
        state = self.state()
        if not self.writes:
            return
        path = self.folder.path / checkpoint.CHECKPOINT_FILE
        had_one = path.is_file()
        try:
            checkpoint.save(path, state)
        except MlrunError as exc:
            p = self.position
            where = f"after epoch {p.epoch - 1}" if p.step == 0 else f"at epoch {p.epoch}, step {p.step}"
            advice = (
                f"the previous checkpoint is intact: fix the cause, then mlrun resume {self.folder.path}"
                if had_one
                else "no earlier checkpoint exists: fix the cause and start the run again"
            )
            raise MlrunError(f"could not save the checkpoint {where}: {exc}", problems=[advice]) from exc

    # ---------------------------------------------------------------- the loop

    def fit(self, stop: StopRequests) -> list[dict[str, Any]]:
        """Train the remaining epochs on ``train.threads`` threads; returns every epoch's metrics.

        The process's thread count is given back afterwards (mlrun used as a library).
        """
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self._fit(stop)
        finally:
            torch.set_num_threads(previous)

    def _fit(self, stop: StopRequests) -> list[dict[str, Any]]:
        p, callbacks = self.position, self.callbacks
        callbacks.fire("on_fit_start")
        while p.epoch <= self.settings.epochs and self.selection.stopped_at is None:
            if p.indices is None:  # a fresh epoch (a resumed one keeps its order and running loss)
                order = self.order.next_epoch()
                train_indices = self.built.train_indices
                p.indices = order if train_indices is None else train_indices[order]
                p.step, p.loss_sum, p.sample_count = 0, 0.0, 0
            started = time.perf_counter()
            self._train_epoch(stop)
            train_loss = self._train_loss()
            with callbacks.evaluation_weights():  # ema's averaged weights, when it is asked to evaluate with them
                figures = self.last_figures = self.evaluate(self.eval_split)
                self._record_epoch(train_loss, figures, time.perf_counter() - started)
                callbacks.evaluate_end(p.metrics[-1])
                self.built.schedule.after_epoch(self._named(figures))
                self._select(p.metrics[-1])
            self._watch_loss(train_loss)
            p.epoch, p.step, p.indices = p.epoch + 1, 0, None
            if self.writes:
                self.folder.write_metrics(p.metrics)
                self.folder.write_step_losses(p.step_losses)
            callbacks.epoch_end(p.metrics[-1])
            self.save_checkpoint()
        return p.metrics

    def _train_loss(self) -> float:
        """The mean training loss of the epoch just trained, over every rank."""
        loss_sum, sample_count = self.position.loss_sum, self.position.sample_count
        if self.group is not None:  # every rank saw part of the data: add the parts up
            loss_sum, sample_count = self.group.sum(loss_sum, sample_count)  # type: ignore[assignment]
        return loss_sum / max(sample_count, 1)

    def evaluate(self, split: str) -> dict[str, Value]:
        """The loss and every metric of ``split`` ("val" or "test") with the current weights (every rank calls it)."""
        built = self.built
        if split == "val":
            assert built.val_indices is not None
            source, indices = self.val_source, built.val_indices
            if self.group is not None:
                indices = shard(indices, self.group.rank, self.group.world_size)
        else:
            source = self.test_source
            size = len(built.test_set)
            indices = self.group.eval_shard(size) if self.group else torch.arange(size)
        args = (built.model, built.criterion, source, indices, built.device, self.precision, split)
        return self.evaluator.run(*args)

    def _named(self, figures: Mapping[str, Value]) -> dict[str, float]:
        """The epoch's scalar figures as a scheduler may name them: ``loss``, ``accuracy``, ``val.loss``..."""
        split = self.eval_split
        named = {key: float(value) for key, value in figures.items() if isinstance(value, (int, float))}
        return {**named, **{f"{split}.{key}": value for key, value in named.items()}}

    def _record_epoch(self, train_loss: float, figures: Mapping[str, Value], seconds: float) -> None:
        """Add the epoch's row to the metrics and print it."""
        p = self.position
        lr = float(self.built.optimizer.param_groups[0]["lr"])  # at the end of the epoch
        evaluated = self.evaluator.row(self.eval_split, figures)
        p.metrics.append({
            "epoch": p.epoch, "train_loss": round(train_loss, 6), **evaluated,
            "lr": lr, "seconds": round(seconds, 3),
        })  # fmt: skip
        shown = "  ".join(f"{key} {value:.4f}" for key, value in evaluated.items())
        self.echo(
            f"epoch {p.epoch}/{self.settings.epochs}  train_loss {train_loss:.4f}  {shown}  lr {lr:.3g}  {seconds:.1f}s"
        )

    def _select(self, row: Mapping[str, Any]) -> None:
        """Track the monitored figure: best.pt when it improves, early stopping when it stalls."""
        selection = self.selection
        if not selection.active:
            return
        if selection.update(self.position.epoch, float(row[selection.column])) and self.writes:
            self.folder.save_weights(self.built.model.state_dict(), best=True)

    def _train_epoch(self, stop: StopRequests) -> None:
        """The classic five steps per batch, from where the epoch left off."""
        p, settings = self.position, self.settings
        assert p.indices is not None
        mine = self.group.shard(p.indices) if self.group else p.indices
        remaining = mine[p.step * settings.batch_size :]
        batches = -(-len(mine) // settings.batch_size)
        bar = _progress_bar(p.epoch, settings.epochs, len(self.train_source), p.step) if self.show_bar else None
        self.forward_model.train()
        # Looked up once per epoch, not per step: on a ~1 ms step every lookup shows.
        step, count_step = self._step, self._count_step
        step_end = self.callbacks.step_end if self.callbacks.wants("on_step_end") else None
        window, every = settings.accumulate_steps, settings.checkpoint_every_steps
        try:
            for inputs, labels in self.train_source.epoch(remaining):
                # A window ends after accumulate_steps batches, or with the epoch's last batch.
                ends_window = window == 1 or (p.step + 1) % window == 0 or p.step + 1 == batches
                value, stopping = step(inputs, labels, stop, ends_window=ends_window)
                count_step(value, len(labels))
                if step_end is not None:
                    step_end(p.epoch, p.step, p.global_step, value, self.step_lr, self.grad_norm)
                if bar is not None:
                    bar.update(1)
                if every and p.global_step % every == 0:
                    self.save_checkpoint()
                if stopping:
                    self._stop_for(stop.signal or signal.SIGTERM)
        finally:
            if bar is not None:
                bar.close()

    def _step(
        self, inputs: torch.Tensor, labels: torch.Tensor, stop: StopRequests, *, ends_window: bool
    ) -> tuple[float, bool]:
        """One batch: forward, loss, backward, and the optimizer step when it ends an accumulation window.

        Returns the loss and whether to stop after it. A non-finite loss (on any rank)
        stops before ``optimizer.step()``: the weights stay good.
        """
        built, window, plain = self.built, self.settings.accumulate_steps, self.plain_steps
        inputs, labels = inputs.to(built.device), labels.to(built.device)
        if plain:  # the classic steps with nothing around them: each wrapper costs µs per step
            output = self.forward_model(inputs)  # forward pass
            loss = built.criterion(output, labels)  # loss against the true labels
            built.optimizer.zero_grad()  # clear gradients left by the previous step
            loss.backward()  # compute gradients
        else:
            starts_window = self.position.step % window == 0
            # Under DDP, the inner batches of a window keep their gradients local (no all-reduce).
            syncing = contextlib.nullcontext() if ends_window or self.group is None else self.forward_model.no_sync()  # type: ignore[operator]
            with syncing:
                with self.precision.autocast():
                    output = self.forward_model(inputs)  # forward pass
                    loss = built.criterion(output, labels)  # loss against the true labels
                if starts_window:
                    built.optimizer.zero_grad()  # clear gradients left by the previous step
                self.precision.backward(loss / window if window > 1 else loss)  # compute gradients
        value, stopping = loss.item(), stop.signal is not None
        if self.group is not None:
            value, stopping = self._agree(value, stop)
        if not math.isfinite(value):
            p = self.position
            p.step_losses.append((p.epoch, p.step + 1, value, float("nan"), float("nan")))
            raise NonFiniteLoss(
                f"non-finite loss at epoch {p.epoch}, step {p.step + 1} (loss = {value}); "
                "training stopped before the weights were updated",
                problems=non_finite_advice(self.folder.path, self.built.optimizer.param_groups[0]["lr"]),
            )
        self.step_lr = float(built.optimizer.param_groups[0]["lr"])
        self.grad_norm = math.nan
        if plain:
            built.optimizer.step()  # update weights
            built.schedule.after_step()
        elif ends_window:
            self.grad_norm = self.precision.step(
                built.optimizer, built.model, self.settings.clip_grad_norm
            )  # update weights
            built.schedule.after_step()  # per-step schedules move on (no-op without a scheduler)
        return value, stopping

    def _agree(self, value: float, stop: StopRequests) -> tuple[float, bool]:
        """All ranks stop together, or none does; a loss broken on one rank counts as broken on all."""
        assert self.group is not None
        worst, stop_code = self.group.max(0.0 if math.isfinite(value) else 1.0, stop.signal or 0)
        if worst and math.isfinite(value):
            value = float("nan")  # another rank's loss broke; its NaN is in our gradients
        stop.signal = int(stop_code) or None
        return value, bool(stop_code)

    def _count_step(self, value: float, samples: int) -> None:
        """Advance the position past a finished step and add its loss to the running sum."""
        p = self.position
        p.step += 1
        p.global_step += 1
        p.loss_sum += value * samples
        p.sample_count += samples
        p.step_losses.append((p.epoch, p.step, value, self.step_lr, self.grad_norm))

    def _watch_loss(self, train_loss: float) -> None:
        """Warn once when the loss has exploded: the run 'completes' but has learned nothing."""
        if not self.position.step_losses or any("exploded" in w for w in self.warnings):
            return
        first = self.position.step_losses[0][2]
        if train_loss > 10 and train_loss > 10 * first:
            warning = (
                f"the training loss exploded ({train_loss:.4g} in epoch {self.position.epoch}, "
                f"from {first:.4g} at the first step): the learning rate "
                f"({self.built.optimizer.param_groups[0]['lr']:g}) is probably far too high"
            )
            self.warnings.append(warning)
            self.echo(f"warning: {warning}")

    def _stop_for(self, signum: int) -> None:
        """Checkpoint where training stands and end the run as interrupted."""
        self.save_checkpoint()
        if self.writes:
            self.folder.write_step_losses(self.position.step_losses)
        name = signal.Signals(signum).name
        raise Interrupted(
            f"{name}: stopped at epoch {self.position.epoch}, step {self.position.step}; checkpoint saved",
            128 + signum,
            problems=[f"resume with: mlrun resume {self.folder.path}"],
        )


def _progress_bar(epoch: int, epochs: int, total: int, done: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)
