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
    """Push two test samples through model and criterion, so a misfit fails before any work.

    Uses the test split (no random transforms, so no random numbers are consumed)
    and eval mode (so batch-norm statistics are not touched).
    """
    from torch.utils.data import default_collate

    count = min(2, len(built.test_set))
    if count == 0:
        raise UsageError(f"dataset '{recipe.dataset.component.name}' has an empty test split")
    inputs, labels = default_collate([built.test_set[i] for i in range(count)])
    model = built.model
    shape = list(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
    try:
        with torch.no_grad():
            model.eval()
            output = model(inputs.to(built.device))
            built.criterion(output, labels.to(built.device))
    except Exception as exc:
        raise UsageError(
            f"model '{recipe.model.component.name}' and criterion "
            f"'{recipe.criterion.component.name}' fail on a batch of dataset "
            f"'{recipe.dataset.component.name}' (inputs of shape {shape}): {type(exc).__name__}: {exc}",
            problems=["check the model's input size and the transforms (e.g. model.input_size)"],
        ) from exc
    finally:
        model.train()


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

    # ---------------------------------------------------------------- checkpoints

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here."""
        p = self.position
        return {
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
        """Continue from a :meth:`state` loaded from a checkpoint."""
        self.built.model.load_state_dict(state["model"])
        self.built.optimizer.load_state_dict(state["optimizer"])
        checkpoint.restore_rng(state["rng"])
        self.order.restore(state["order"])
        self.position = Position(
            epoch=state["epoch"], step=state["step"], global_step=state["global_step"],
            indices=state["indices"], loss_sum=state["loss_sum"],
            sample_count=state["sample_count"], metrics=list(state["metrics"]),
            step_losses=[(int(e), int(s), float(v)) for e, s, v in state["step_losses"].tolist()],
        )  # fmt: skip

    def save_checkpoint(self) -> None:
        """Write the checkpoint atomically (a failure raises, naming the path)."""
        if self.writes:
            checkpoint.save(self.folder.path / checkpoint.CHECKPOINT_FILE, self.state())

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
                        problems=[
                            f"the last good checkpoint is kept: {self.folder.path / checkpoint.CHECKPOINT_FILE}",
                            "try a smaller learning rate (optimizer.lr=...)",
                        ],
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
    """SIGINT/SIGTERM ask training to stop at the next safe point; a second one exits at once."""

    def __init__(self, echo: Echo) -> None:
        self.signal: int | None = None
        self.echo = echo
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._request)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _request(self, signum: int, frame: Any) -> None:
        self.signal = signum
        self.echo(
            f"{signal.Signals(signum).name} received: stopping after this step and saving a "
            "checkpoint (send it again to exit at once)"
        )
        # A second signal takes the default path: KeyboardInterrupt / termination. Files
        # are only ever replaced by atomic renames, so nothing is left half-written.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run(
    recipe: Recipe,
    *,
    echo: Echo = print,
    progress: bool | None = None,
    resume: RunFolder | None = None,
) -> RunResult:
    """Build and train a validated recipe, writing (or, with ``resume``, continuing) a run folder.

    Under torchrun (WORLD_SIZE > 1) every rank calls this; rank 0 alone prints and writes.
    """
    settings = recipe.train
    group = distributed.join(settings.backend, settings.device, settings.dist_timeout_s)
    try:
        return _run(recipe, echo=echo, progress=progress, resume=resume, group=group)
    finally:
        distributed.leave(group)


def _run(
    recipe: Recipe, *, echo: Echo, progress: bool | None, resume: RunFolder | None,
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
    for warning in recipe.warnings:
        echo(f"warning: {warning}")
    saved = checkpoint.load(resume.path / checkpoint.CHECKPOINT_FILE) if resume else None
    built = build(recipe, local_rank=group.local_rank if group else None)
    probe(recipe, built)
    # Denormal floats are orders of magnitude slower on CPUs; late in training many
    # small gradients become denormal and epochs slow down without this.
    torch.set_flush_denormal(settings.flush_denormal)
    show_bar = (sys.stderr.isatty() if progress is None else progress) and main
    status: dict[str, Any] = {}
    if resume is not None:
        folder = resume
        if main:
            status = folder.read_status()
            status["resumed"] = [*status.get("resumed", []), _now()]
    else:
        folder = _new_run_folder(recipe) if main else RunFolder(Path())
        if group is not None:
            folder = RunFolder(Path(group.broadcast(str(folder.path))))
        status = {"recipe": str(recipe.path), "started": _now()}
    trainer = Trainer(recipe, built, folder, echo=echo, show_bar=show_bar, group=group)
    if saved is not None:
        trainer.restore(saved)
    status.update(
        status="running", device=str(built.device), data_path=trainer.data_plan.path,
        data_path_reason=trainer.data_plan.reason, versions=versions(recipe),
    )  # fmt: skip
    if group is not None:
        status["distributed"] = {
            "world_size": group.world_size, "backend": group.backend,
            "batch_size_per_process": settings.batch_size,
            "global_batch_size": settings.batch_size * group.world_size,
        }  # fmt: skip
    status.pop("error", None)
    if main:
        folder.write_status(status)
    where = (
        f"resuming at epoch {trainer.position.epoch}, step {trainer.position.step}"
        if saved is not None
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
    result = RunResult(folder)
    try:
        with StopRequests(echo) as stop:
            result.metrics = trainer.fit(stop)
        if group is not None:
            digests = group.gather(_weights_digest(built.model))
            status["distributed"].update(rank_weights_sha256=digests, ranks_in_sync=len(set(digests)) == 1)
        if main:
            folder.save_weights(built.model.state_dict())
            _plot_metrics(folder, echo)
    except BaseException as exc:
        if main:
            interrupted = isinstance(exc, (KeyboardInterrupt, Interrupted))
            status.update(status="interrupted" if interrupted else "failed", finished=_now())
            status["error"] = exc.render() if isinstance(exc, MlrunError) else f"{type(exc).__name__}: {exc}"
            _write_status_after_failure(folder, status)
            with contextlib.suppress(MlrunError):  # the steps up to the failure, NaN step included
                folder.write_step_losses(trainer.position.step_losses)
            if trainer.position.metrics:
                _plot_metrics(folder, echo)
        if isinstance(exc, Exception) and not isinstance(exc, MlrunError):
            raise MlrunError(
                f"training failed in epoch {trainer.position.epoch}: {type(exc).__name__}: {exc}",
                problems=[f"the run folder {folder.path} records the failure (status: failed)"],
            ) from exc
        raise
    if main:
        status.update(status="completed", finished=_now(), final=result.metrics[-1] if result.metrics else {})
        folder.write_status(status)
        if group is not None:  # the job is done: no elastic restart will need to find it
            with contextlib.suppress(OSError):
                _elastic_pointer(settings.output_dir).unlink()
    echo(f"done: test_accuracy {result.final_accuracy:.4f}; weights and metrics in {folder.path}")
    return result


def _silent(line: str) -> None:
    """Ranks other than 0 print nothing."""


def _new_run_folder(recipe: Recipe) -> RunFolder:
    folder = RunFolder.create(recipe.train.output_dir, recipe.run_name)
    folder.write_recipe(
        recipe.to_dict(),
        header=f"# Resolved recipe of {recipe.path}; rerun with: mlrun {folder.path / 'recipe.toml'}\n",
    )
    if os.environ.get("TORCHELASTIC_RUN_ID"):  # lets an elastic restart find the run to resume
        atomic_write_text(_elastic_pointer(recipe.train.output_dir), str(folder.path))
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
