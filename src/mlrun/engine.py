"""The engine: build a recipe's components and run the classic training loop.

transform -> dataset -> DataLoader -> model -> criterion -> optimizer, then for
each epoch and batch: forward, loss, zero_grad, backward, step; then evaluation
under ``torch.no_grad()`` with ``model.eval()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import mlrun
from mlrun import batches, checkpoint, distributed
from mlrun import resume as resume_policy
from mlrun.errors import MlrunError, UsageError
from mlrun.files import atomic_write_text
from mlrun.recipe import ComponentSpec, Recipe, transforms_for
from mlrun.runs import RunFolder

Echo = Callable[[str], None]


@dataclass
class Built:
    """Everything a recipe describes, constructed and ready to train."""

    train_set: Any
    test_set: Any
    model: torch.nn.Module
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    device: torch.device


@dataclass
class RunResult:
    """What a finished run produced."""

    folder: RunFolder
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last epoch."""
        return float(self.metrics[-1]["test_accuracy"])


def select_device(setting: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a usage error."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise UsageError("train.device: 'cuda' was requested but no CUDA GPU is available here")
    return torch.device(setting)


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's random number generators (and NumPy's, if it is installed)."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with torchvision
        return
    numpy.random.seed(seed)


def compose(specs: list[ComponentSpec], *, train: bool) -> Callable[[Any], Any] | None:
    """Build the transform pipeline; random transforms (augmentation) apply to training only."""
    steps = [build_component(spec) for spec in transforms_for(specs, train=train)]
    if not steps:
        return None

    def pipeline(sample: Any) -> Any:
        for step in steps:
            sample = step(sample)
        return sample

    return pipeline


def build_component(spec: ComponentSpec, **injected: Any) -> Any:
    """Call a component's factory; a failure inside a plugin names the component and plugin."""
    try:
        return spec.build(**injected)
    except MlrunError:
        raise
    except Exception as exc:
        component = spec.component
        raise MlrunError(
            f"could not build {component.kind} '{component.name}' "
            f"(from {spec.entry.plugin.label}): {type(exc).__name__}: {exc}"
        ) from exc


def build(recipe: Recipe, *, local_rank: int | None = None) -> Built:
    """Construct datasets, model, criterion and optimizer, seeded for reproducibility."""
    seed_everything(recipe.train.seed)
    device = select_device(recipe.train.device)
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", local_rank)
    train_set = build_component(recipe.dataset, train=True, transform=compose(recipe.transforms, train=True))
    test_set = build_component(recipe.dataset, train=False, transform=compose(recipe.transforms, train=False))
    model = build_component(recipe.model).to(device)
    criterion = build_component(recipe.criterion)
    if isinstance(criterion, torch.nn.Module):
        criterion = criterion.to(device)
    optimizer = build_component(recipe.optimizer, params=model.parameters())
    return Built(train_set, test_set, model, criterion, optimizer, device)


def probe(recipe: Recipe, built: Built) -> None:
    """Push test samples and one training sample through model and criterion, so a misfit fails before any work.

    Also checks that the dataset's labels fit the model's output width (11 classes
    into 10 scores would otherwise fail mid-epoch). Runs in eval mode (batch-norm
    statistics untouched), and gives back every random number it draws (a training
    sample's augmentations draw some), so the training that follows is bitwise the
    same as without the probe.
    """
    from torch.utils.data import default_collate

    dataset, model_name = recipe.dataset.component.name, recipe.model.component.name
    criterion_name = recipe.criterion.component.name
    if len(built.test_set) == 0:
        raise UsageError(f"dataset '{dataset}' has an empty test split")
    if len(built.train_set) == 0:
        raise UsageError(f"dataset '{dataset}' has an empty training split")
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with torchvision
        numpy = None  # type: ignore[assignment]
    saved_rng = (
        torch.get_rng_state(), random.getstate(), numpy.random.get_state() if numpy else None,
        torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    )  # fmt: skip

    def batch_of(split: str, data: Any, indices: list[int]) -> tuple[Any, Any]:
        try:
            return default_collate([data[i] for i in indices])
        except Exception as exc:
            raise UsageError(
                f"the transforms fail on a {split} sample of dataset '{dataset}': {type(exc).__name__}: {exc}",
                problems=["check the transforms' parameters against the dataset's samples "
                          "(e.g. random_crop's size against 28x28 images)"],
            ) from exc  # fmt: skip

    def largest_label(labels: torch.Tensor) -> int | None:
        # The whole dataset's labels when it exposes them (torchvision style), else a sample.
        found = [int(labels.max())] if labels.numel() else []
        for data in (built.train_set, built.test_set):
            targets = getattr(data, "targets", None)
            try:
                targets = torch.as_tensor(targets) if targets is not None else None
            except (TypeError, ValueError, RuntimeError):
                targets = None
            if targets is not None and targets.numel() and not targets.is_floating_point():
                found.append(int(targets.max()))
            elif targets is None:
                step = max(len(data) // 64, 1)
                found += [int(label) for _, label in (data[i] for i in range(0, len(data), step)[:64])
                          if isinstance(label, int) or (isinstance(label, torch.Tensor) and label.numel() == 1)]  # fmt: skip
        return max(found, default=None)

    def check(split: str, labels: Any, output: torch.Tensor) -> None:
        if split == "test" and isinstance(labels, torch.Tensor) and labels.dim() == 1 and output.dim() == 2 \
                and not labels.is_floating_point():  # fmt: skip
            top = largest_label(labels)
            width = output.shape[1]
            if top is not None and top >= width:
                fixes = [
                    f"set model.num_classes={top + 1}" if "num_classes" in recipe.model.params
                    else f"use a model with {top + 1} outputs (the model's output size)"
                ]
                if "num_classes" in recipe.dataset.params:
                    fixes.append(f"or set dataset.num_classes={width}")
                raise UsageError(
                    f"dataset '{dataset}' has {top + 1} classes (labels 0..{top}) but model "
                    f"'{model_name}' outputs {width} scores",
                    problems=fixes,
                )
        built.criterion(output, labels.to(built.device))

    model = built.model
    try:
        batches_to_try = [
            ("test", *batch_of("test", built.test_set, list(range(min(2, len(built.test_set)))))),
            # Random transforms (augmentation) apply to training samples only: try one too.
            ("training", *batch_of("training", built.train_set, [0])),
        ]
        with torch.no_grad():
            model.eval()
            for split, inputs, labels in batches_to_try:
                shape = list(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
                try:
                    check(split, labels, model(inputs.to(built.device)))
                except UsageError:
                    raise
                except Exception as exc:
                    raise UsageError(
                        f"model '{model_name}' and criterion '{criterion_name}' fail on a batch of "
                        f"dataset '{dataset}' ({split} split, inputs of shape {shape}): {type(exc).__name__}: {exc}",
                        problems=["check the model's input size and the transforms (e.g. model.input_size)"],
                    ) from exc
    finally:
        model.train()
        torch.set_rng_state(saved_rng[0])
        random.setstate(saved_rng[1])
        if numpy is not None:
            numpy.random.set_state(saved_rng[2])
        if saved_rng[3] is not None:
            torch.cuda.set_rng_state_all(saved_rng[3])


def versions(recipe: Recipe) -> dict[str, str]:
    """The software a run used: Python, torch, mlrun, and each plugin that provided a component."""
    import torchvision

    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "mlrun": mlrun.__version__,
    }
    specs = [recipe.dataset, *recipe.transforms, recipe.model, recipe.criterion, recipe.optimizer]
    for spec in specs:
        plugin = spec.entry.plugin
        if not plugin.builtin and plugin.distribution:
            found[plugin.distribution] = plugin.version or "unknown"
    return found


def evaluate_sums(
    model: torch.nn.Module,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> tuple[float, int, int]:
    """Summed test loss, correct predictions and sample count, under ``torch.no_grad()`` in eval mode.

    Sums (not means) so that the shares of several ranks add up exactly.
    """
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = 0
    with torch.no_grad():
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            output = model(inputs)
            total_loss += criterion(output, labels).double() * len(labels)
            correct += (output.argmax(dim=1) == labels).sum()
            count += len(labels)
    model.train()
    return float(total_loss), int(correct), count


def evaluate(
    model: torch.nn.Module,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> tuple[float, float]:
    """Mean test loss and accuracy, under ``torch.no_grad()`` with the model in eval mode."""
    loss_sum, correct, count = evaluate_sums(model, criterion, loader, device)
    if count == 0:
        raise MlrunError("the test split is empty: nothing to evaluate")
    return loss_sum / count, correct / count


class Interrupted(MlrunError):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint."""

    def __init__(self, message: str, exit_code: int, *, problems: list[str]) -> None:
        super().__init__(message, problems=problems)
        self.exit_code = exit_code


class NonFiniteLoss(MlrunError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Position:
    """Where training is: the epoch in progress, batches done in it, and the running loss."""

    epoch: int = 1
    step: int = 0
    global_step: int = 0
    indices: torch.Tensor | None = None  # this epoch's sample order; None before it starts
    loss_sum: float = 0.0
    sample_count: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[tuple[int, int, float]] = field(default_factory=list)


class Trainer:
    """Runs the classic loop over built components, writing checkpoints into a run folder."""

    def __init__(
        self, recipe: Recipe, built: Built, folder: RunFolder, *, echo: Echo, show_bar: bool,
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
        self.data_plan = batches.plan(recipe)
        self.train_source = batches.batch_source(recipe, built.train_set, self.data_plan, train=True)
        self.test_source = batches.batch_source(recipe, built.test_set, self.data_plan, train=False)
        self.order = batches.EpochOrder(
            len(built.train_set), shuffle=self.settings.shuffle, seed=self.settings.seed
        )
        self.position = Position()
        self.recipe_record = resume_policy.recipe_record(recipe.to_dict())
        self.warnings: list[str] = []

    # ---------------------------------------------------------------- checkpoints

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here (call on every rank: it gathers)."""
        p = self.position
        share = (p.loss_sum, float(p.sample_count))
        # Each rank's running loss is its own: rank 0 writes them all, each rank restores its own.
        shares = self.group.gather(share) if self.group is not None else [share]
        return {
            "recipe": self.recipe_record,
            "world_size": self.group.world_size if self.group is not None else 1,
            "train_size": len(self.built.train_set),
            "loss_shares": torch.tensor(shares, dtype=torch.float64),
            "model": self.built.model.state_dict(),
            "optimizer": self.built.optimizer.state_dict(),
            "rng": checkpoint.capture_rng(),
            "order": self.order.state(),
            "epoch": p.epoch,
            "step": p.step,
            "global_step": p.global_step,
            "indices": p.indices,
            "loss_sum": p.loss_sum,
            "sample_count": p.sample_count,
            "metrics": p.metrics,
            "step_losses": torch.tensor(p.step_losses, dtype=torch.float64).reshape(-1, 3),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state` loaded from a checkpoint; a misfit is a UsageError.

        The recipe's optimizer hyper-parameters (lr, weight decay…) are applied after the
        optimizer's state is loaded: a resume with a changed learning rate really uses it.
        """
        self._check_fits(state)
        optimizer = self.built.optimizer
        recipe_hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        try:
            self.built.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0][:300]
            raise UsageError(
                f"the checkpoint does not fit model '{self.recipe.model.component.name}' or "
                f"optimizer '{self.recipe.optimizer.component.name}' ({reason})",
                problems=["resume with the recipe the run was trained with, or start a new run"],
            ) from exc
        for group, hyper in zip(optimizer.param_groups, recipe_hyper):
            group.update(hyper)
        checkpoint.restore_rng(state["rng"])
        self.order.restore(state["order"])
        self.position = Position(
            epoch=state["epoch"], step=state["step"], global_step=state["global_step"],
            indices=state["indices"], loss_sum=state["loss_sum"],
            sample_count=state["sample_count"], metrics=list(state["metrics"]),
            step_losses=[(int(e), int(s), float(v)) for e, s, v in state["step_losses"].tolist()],
        )  # fmt: skip
        shares = state.get("loss_shares")
        if shares is not None and len(shares) == state.get("world_size", 1):
            loss_sum, count = shares[self.group.rank if self.group is not None else 0].tolist()
            self.position.loss_sum, self.position.sample_count = loss_sum, int(count)

    def _check_fits(self, state: dict[str, Any]) -> None:
        """Refuse, before anything changes, a checkpoint from another world size or other data."""
        world = self.group.world_size if self.group is not None else 1
        saved_world = int(state.get("world_size", world))
        if saved_world != world:
            raise UsageError(
                f"this run was trained with {saved_world} process{'es' if saved_world > 1 else ''}, "
                f"not {world}: another count changes the batches and the weights",
                problems=[f"resume with: mlrun resume {self.folder.path} --nproc {saved_world}"],
            )
        saved_size, size = state.get("train_size"), len(self.built.train_set)
        if saved_size is not None and int(saved_size) != size:
            raise UsageError(
                f"the training split now has {size} samples, but the checkpoint was taken with "
                f"{saved_size}: the data changed since the run started",
                problems=["restore the original data, or start a new run"],
            )

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
        """Train the remaining epochs; returns every epoch's metrics."""
        p, settings = self.position, self.settings
        while p.epoch <= settings.epochs:
            if p.indices is None:
                p.indices = self.order.next_epoch()
                p.step, p.loss_sum, p.sample_count = 0, 0.0, 0
            started = time.perf_counter()
            self._train_epoch(stop)
            test_size = len(self.built.test_set)
            test_indices = self.group.eval_shard(test_size) if self.group else torch.arange(test_size)
            sums = evaluate_sums(
                self.built.model, self.built.criterion, self.test_source.epoch(test_indices), self.built.device
            )
            loss_sum, sample_count = p.loss_sum, p.sample_count
            if self.group is not None:  # every rank saw part of the data: add the parts up
                loss_sum, sample_count, *sums = self.group.sum(loss_sum, sample_count, *sums)  # type: ignore[assignment]
            test_loss_sum, correct, test_count = sums
            if test_count == 0:
                raise MlrunError("the test split is empty: nothing to evaluate")
            test_loss, accuracy = test_loss_sum / test_count, correct / test_count
            seconds = time.perf_counter() - started
            train_loss = loss_sum / max(sample_count, 1)
            p.metrics.append({
                "epoch": p.epoch, "train_loss": round(train_loss, 6), "test_loss": round(test_loss, 6),
                "test_accuracy": round(accuracy, 6), "seconds": round(seconds, 3),
            })  # fmt: skip
            self.echo(
                f"epoch {p.epoch}/{settings.epochs}  train_loss {train_loss:.4f}  "
                f"test_loss {test_loss:.4f}  test_accuracy {accuracy:.4f}  {seconds:.1f}s"
            )
            self._watch_loss(train_loss)
            p.epoch, p.step, p.indices = p.epoch + 1, 0, None
            if self.writes:
                self.folder.write_metrics(p.metrics)
                self.folder.write_step_losses(p.step_losses)
            self.save_checkpoint()
        return p.metrics

    def _train_epoch(self, stop: StopRequests) -> None:
        """The classic five steps per batch, from where the epoch left off."""
        p, built, settings = self.position, self.built, self.settings
        model, criterion, optimizer = self.forward_model, built.criterion, built.optimizer
        assert p.indices is not None
        mine = self.group.shard(p.indices) if self.group else p.indices
        remaining = mine[p.step * settings.batch_size :]
        bar = _progress_bar(p.epoch, settings.epochs, len(self.train_source), p.step) if self.show_bar else None
        model.train()
        try:
            for inputs, labels in self.train_source.epoch(remaining):
                inputs, labels = inputs.to(built.device), labels.to(built.device)
                output = model(inputs)  # forward pass
                loss = criterion(output, labels)  # loss against the true labels
                optimizer.zero_grad()  # clear gradients left by the previous step
                loss.backward()  # compute gradients
                value = float(loss.detach())
                stopping = stop.signal is not None
                if self.group is not None:  # all ranks stop together, or none does
                    worst, stop_code = self.group.max(0.0 if math.isfinite(value) else 1.0, stop.signal or 0)
                    if worst and math.isfinite(value):
                        value = float("nan")  # another rank's loss broke; its NaN is in our gradients
                    stopping, stop.signal = bool(stop_code), int(stop_code) or None
                if not math.isfinite(value):
                    p.step_losses.append((p.epoch, p.step + 1, value))
                    raise NonFiniteLoss(
                        f"non-finite loss at epoch {p.epoch}, step {p.step + 1} (loss = {value}); "
                        "training stopped before the weights were updated",
                        problems=self._non_finite_advice(),
                    )
                optimizer.step()  # update weights
                p.step += 1
                p.global_step += 1
                p.loss_sum += value * len(labels)
                p.sample_count += len(labels)
                p.step_losses.append((p.epoch, p.step, value))
                if bar is not None:
                    bar.update(1)
                every = settings.checkpoint_every_steps
                if every and p.global_step % every == 0:
                    self.save_checkpoint()
                if stopping:
                    self._stop_for(stop.signal or signal.SIGTERM)
        finally:
            if bar is not None:
                bar.close()

    def _non_finite_advice(self) -> list[str]:
        """What to do after a NaN: resume from the checkpoint if there is one, else start again."""
        smaller = f"optimizer.lr={self.built.optimizer.param_groups[0]['lr'] / 10:g}"
        path = self.folder.path / checkpoint.CHECKPOINT_FILE
        if path.is_file():
            return [
                f"the last good checkpoint is kept: {path}",
                f"resume it with a smaller learning rate: mlrun resume {self.folder.path} {smaller} --force",
            ]
        return [
            "no checkpoint was written yet: the loss broke before the first one",
            f"start again with a smaller learning rate: mlrun {self.folder.path / 'recipe.toml'} {smaller}",
        ]

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
        self.save_checkpoint()
        if self.writes:
            self.folder.write_step_losses(self.position.step_losses)
        name = signal.Signals(signum).name
        raise Interrupted(
            f"{name}: stopped at epoch {self.position.epoch}, step {self.position.step}; "
            "checkpoint saved",
            128 + signum,
            problems=[f"resume with: mlrun resume {self.folder.path}"],
        )


class StopRequests:
    """SIGINT/SIGTERM/SIGHUP ask training to stop at the next safe point; a second one exits at once."""

    #: SIGHUP too: a closed terminal or SSH session should stop a run as cleanly as Ctrl-C.
    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, echo: Echo) -> None:
        self.signal: int | None = None
        #: Training is over and the last files are being written: a signal changes nothing now.
        self.finishing = False
        self.echo = echo
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._request)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _request(self, signum: int, frame: Any) -> None:
        self.signal = signum
        name = signal.Signals(signum).name
        if self.finishing:
            self.echo(f"{name} received: training is complete; writing the last files")
        else:
            self.echo(
                f"{name} received: stopping after this step and saving a checkpoint "
                "(send it again to exit at once)"
            )
        # A second signal takes the default path: KeyboardInterrupt / termination. Files
        # are only ever replaced by atomic renames, so nothing is left half-written.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


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
    recipe: Recipe, *, echo: Echo, progress: bool | None, resume: RunFolder | None, force: bool,
    group: distributed.Group | None,
) -> RunResult:
    settings = recipe.train
    main = group is None or group.is_main
    if not main:
        echo = _silent
    if resume is None and group is not None:
        resume = _elastic_resume_folder(settings.output_dir, group)
    if resume is None and main:
        RunFolder.check_writable(settings.output_dir)
    with contextlib.ExitStack() as held:
        saved: dict[str, Any] | None = None
        changes: list[str] = []
        if resume is not None:
            if main:  # held until the run ends: a second writer is refused, not interleaved
                held.enter_context(resume.lock())
                resume.remove_stale_temp_files()
            saved = checkpoint.load(resume.path / checkpoint.CHECKPOINT_FILE)
            changes = resume_policy.check_changes(
                resume_policy.saved_recipe(saved, resume.path), recipe.to_dict(),
                folder=resume.path, force=force, epochs_done=resume_policy.epochs_done(saved),
            )  # fmt: skip
        for warning in recipe.warnings:
            echo(f"warning: {warning}")
        built = build(recipe, local_rank=group.local_rank if group else None)
        probe(recipe, built)
        # Denormal floats are orders of magnitude slower on CPUs; late in training many
        # small gradients become denormal and epochs slow down without this.
        torch.set_flush_denormal(settings.flush_denormal)
        folder = resume or _new_run_folder(recipe, group, held)
        show_bar = (sys.stderr.isatty() if progress is None else progress) and main
        trainer = Trainer(recipe, built, folder, echo=echo, show_bar=show_bar, group=group)
        if saved is not None:
            trainer.restore(saved)  # refuses a misfit before anything is written
        if changes and main:
            folder.write_recipe(
                recipe.to_dict(), header=f"# Resolved recipe; changed on resume: {', '.join(changes)}\n"
            )
        status = _start_status(recipe, trainer, folder, group, resumed=saved is not None) if main else {}
        _announce(recipe, trainer, folder, group, echo, resumed=saved is not None)
        return _train(trainer, folder, status, echo=echo, group=group)


def _start_status(
    recipe: Recipe, trainer: Trainer, folder: RunFolder, group: distributed.Group | None, *, resumed: bool
) -> dict[str, Any]:
    """run.json as the run starts (or resumes): status running, who runs it, with what."""
    settings = recipe.train
    if resumed:
        status = folder.read_status()
        status["resumed"] = [*status.get("resumed", []), _now()]
    else:
        status = {"recipe": str(recipe.path), "started": _now()}
    status.update(
        status="running", **RunFolder.owner(), device=str(trainer.built.device),
        data_path=trainer.data_plan.path, data_path_reason=trainer.data_plan.reason,
        versions=versions(recipe),
    )  # fmt: skip
    if group is not None:
        status["distributed"] = {
            "world_size": group.world_size, "backend": group.backend,
            "batch_size_per_process": settings.batch_size,
            "global_batch_size": settings.batch_size * group.world_size,
        }  # fmt: skip
    for stale in ("error", "finished", "warnings"):
        status.pop(stale, None)
    folder.write_status(status)
    return status


def _announce(
    recipe: Recipe, trainer: Trainer, folder: RunFolder, group: distributed.Group | None, echo: Echo,
    *, resumed: bool,
) -> None:
    """The run log's opening lines: what trains on what, where, and how the data flows."""
    settings, built, p = recipe.train, trainer.built, trainer.position
    where = (
        f"resuming at epoch {p.epoch}, step {p.step}"
        if resumed
        else f"{settings.epochs} epoch{'s' if settings.epochs != 1 else ''}"
    )
    echo(
        f"training {recipe.model.component.name} on {recipe.dataset.component.name} "
        f"({len(built.train_set)} train / {len(built.test_set)} test samples) on {built.device}, "
        f"{where}; run folder: {folder.path}"
    )
    echo(f"data path: {trainer.data_plan.path} ({trainer.data_plan.reason})")
    if group is not None:
        echo(
            f"distributed: {group.world_size} processes ({group.backend}); batch size "
            f"{settings.batch_size} per process, {settings.batch_size * group.world_size} in all"
        )


def _train(
    trainer: Trainer, folder: RunFolder, status: dict[str, Any], *, echo: Echo,
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
                digests = group.gather(_weights_digest(trainer.built.model))
                if main:
                    status["distributed"].update(rank_weights_sha256=digests, ranks_in_sync=len(set(digests)) == 1)
            if main:
                folder.save_weights(trainer.built.model.state_dict())
                final = result.metrics[-1] if result.metrics else {}
                status.update(status="completed", finished=_now(), final=final)
                if trainer.warnings:
                    status["warnings"] = trainer.warnings
                folder.write_status(status)
                completed = True  # from here on, nothing can make this run anything but complete
                _plot_metrics(folder, echo)
    except KeyboardInterrupt:
        if not completed:
            _record_failure(trainer, folder, status, KeyboardInterrupt(), echo, main=main)
            raise
        echo(f"warning: interrupted while drawing {folder.path / 'metrics.png'}; the run is complete")
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
    echo(f"done: test_accuracy {result.final_accuracy:.4f}; weights and metrics in {folder.path}")
    return result


def _record_failure(
    trainer: Trainer, folder: RunFolder, status: dict[str, Any], exc: BaseException, echo: Echo,
    *, main: bool,
) -> None:
    """Mark the run interrupted or failed in run.json, keeping the steps and the plot so far."""
    if not main:
        return
    interrupted = isinstance(exc, (KeyboardInterrupt, Interrupted))
    status.update(status="interrupted" if interrupted else "failed", finished=_now())
    status["error"] = exc.render() if isinstance(exc, MlrunError) else f"{type(exc).__name__}: {exc}"
    if trainer.warnings:
        status["warnings"] = trainer.warnings
    _write_status_after_failure(folder, status)
    with contextlib.suppress(MlrunError):  # the steps up to the failure, NaN step included
        folder.write_step_losses(trainer.position.step_losses)
    if trainer.position.metrics:
        _plot_metrics(folder, echo)


def _silent(line: str) -> None:
    """Ranks other than 0 print nothing."""


def _new_run_folder(
    recipe: Recipe, group: distributed.Group | None, held: contextlib.ExitStack
) -> RunFolder:
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


def _weights_digest(model: torch.nn.Module) -> str:
    """A fingerprint of every weight, to prove all ranks ended with the same model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _write_status_after_failure(folder: RunFolder, status: dict[str, Any]) -> None:
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
        [sys.executable, "-m", "mlrun.plots", str(folder.path)], capture_output=True, text=True
    )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        echo(f"warning: could not draw {folder.path / 'metrics.png'}: {reason}")


def _progress_bar(epoch: int, epochs: int, total: int, done: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)
