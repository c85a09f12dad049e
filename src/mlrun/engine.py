"""The engine: build a recipe's components and run the classic training loop.

transform -> dataset -> DataLoader -> model -> criterion -> optimizer, then for
each epoch and batch: forward, loss, zero_grad, backward, step; then evaluation
under ``torch.no_grad()`` with ``model.eval()``.
"""

from __future__ import annotations

import platform
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

import mlrun
from mlrun import batches
from mlrun.errors import MlrunError, UsageError
from mlrun.recipe import ComponentSpec, Recipe
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
    steps = [
        _build(spec) for spec in specs if train or not getattr(spec.component, "random", False)
    ]
    if not steps:
        return None

    def pipeline(sample: Any) -> Any:
        for step in steps:
            sample = step(sample)
        return sample

    return pipeline


def _build(spec: ComponentSpec, **injected: Any) -> Any:
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


def build(recipe: Recipe) -> Built:
    """Construct datasets, model, criterion and optimizer, seeded for reproducibility."""
    seed_everything(recipe.train.seed)
    device = select_device(recipe.train.device)
    train_set = _build(recipe.dataset, train=True, transform=compose(recipe.transforms, train=True))
    test_set = _build(recipe.dataset, train=False, transform=compose(recipe.transforms, train=False))
    model = _build(recipe.model).to(device)
    criterion = _build(recipe.criterion)
    if isinstance(criterion, torch.nn.Module):
        criterion = criterion.to(device)
    optimizer = _build(recipe.optimizer, params=model.parameters())
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


def evaluate(
    model: torch.nn.Module,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> tuple[float, float]:
    """Mean test loss and accuracy, under ``torch.no_grad()`` with the model in eval mode."""
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = 0
    with torch.no_grad():
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            output = model(inputs)
            total_loss += criterion(output, labels) * len(labels)
            correct += (output.argmax(dim=1) == labels).sum()
            count += len(labels)
    model.train()
    if count == 0:
        raise MlrunError("the test split is empty: nothing to evaluate")
    return float(total_loss) / count, int(correct) / count


def train_epoch(
    built: Built, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], progress: Any | None = None
) -> float:
    """One pass over the training split: the classic five steps per batch. Returns the mean loss."""
    model, criterion, optimizer = built.model, built.criterion, built.optimizer
    model.train()
    running = torch.zeros((), device=built.device)
    count = 0
    for inputs, labels in loader:
        inputs, labels = inputs.to(built.device), labels.to(built.device)
        output = model(inputs)  # forward pass
        loss = criterion(output, labels)  # loss against the true labels
        optimizer.zero_grad()  # clear gradients left by the previous step
        loss.backward()  # compute gradients
        optimizer.step()  # update weights
        running += loss.detach() * len(labels)
        count += len(labels)
        if progress is not None:
            progress.update(1)
    if count == 0:
        raise MlrunError("the training split is empty: nothing to train on")
    return float(running) / count


def run(recipe: Recipe, *, echo: Echo = print, progress: bool | None = None) -> RunResult:
    """Build and train a validated recipe, writing a run folder; returns its metrics."""
    RunFolder.check_writable(recipe.train.output_dir)
    for warning in recipe.warnings:
        echo(f"warning: {warning}")
    built = build(recipe)
    probe(recipe, built)
    settings = recipe.train
    # Denormal floats are orders of magnitude slower on CPUs; late in training many
    # small gradients become denormal and epochs slow down without this.
    torch.set_flush_denormal(settings.flush_denormal)
    data_plan = batches.plan(recipe)
    order = batches.EpochOrder(len(built.train_set), shuffle=settings.shuffle, seed=settings.seed)
    train_loader = batches.train_batches(recipe, built.train_set, data_plan, order)
    test_loader = batches.eval_batches(recipe, built.test_set, data_plan)
    folder = RunFolder.create(settings.output_dir, recipe.run_name)
    folder.write_recipe(
        recipe.to_dict(),
        header=f"# Resolved recipe of {recipe.path}; rerun with: mlrun {folder.path / 'recipe.toml'}\n",
    )
    status: dict[str, Any] = {
        "status": "running",
        "recipe": str(recipe.path),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": str(built.device),
        "data_path": data_plan.path,
        "data_path_reason": data_plan.reason,
        "versions": versions(recipe),
    }
    folder.write_status(status)
    echo(
        f"training {recipe.model.component.name} on {recipe.dataset.component.name} "
        f"({len(built.train_set)} train / {len(built.test_set)} test samples) on {built.device}, "
        f"{settings.epochs} epoch{'s' if settings.epochs != 1 else ''}; run folder: {folder.path}"
    )
    echo(f"data path: {data_plan.path} ({data_plan.reason})")
    show_bar = sys.stderr.isatty() if progress is None else progress
    result = RunResult(folder)
    try:
        for epoch in range(1, settings.epochs + 1):
            started = time.perf_counter()
            bar = _progress_bar(epoch, settings.epochs, len(train_loader)) if show_bar else None
            try:
                train_loss = train_epoch(built, train_loader, bar)
            finally:
                if bar is not None:
                    bar.close()
            test_loss, accuracy = evaluate(built.model, built.criterion, test_loader, built.device)
            seconds = time.perf_counter() - started
            row = {
                "epoch": epoch,
                "train_loss": round(train_loss, 6),
                "test_loss": round(test_loss, 6),
                "test_accuracy": round(accuracy, 6),
                "seconds": round(seconds, 3),
            }
            result.metrics.append(row)
            folder.write_metrics(result.metrics)
            echo(
                f"epoch {epoch}/{settings.epochs}  train_loss {train_loss:.4f}  "
                f"test_loss {test_loss:.4f}  test_accuracy {accuracy:.4f}  {seconds:.1f}s"
            )
        folder.save_weights(built.model.state_dict())
    except BaseException as exc:
        status.update(
            status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
            error=f"{type(exc).__name__}: {exc}",
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        folder.write_status(status)
        if isinstance(exc, Exception) and not isinstance(exc, MlrunError):
            raise MlrunError(
                f"training failed in epoch {len(result.metrics) + 1}: {type(exc).__name__}: {exc}",
                problems=[f"the run folder {folder.path} records the failure (status: failed)"],
            ) from exc
        raise
    status.update(
        status="completed",
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        final=result.metrics[-1] if result.metrics else {},
    )
    folder.write_status(status)
    echo(f"done: test_accuracy {result.final_accuracy:.4f}; weights and metrics in {folder.path}")
    return result


def _progress_bar(epoch: int, epochs: int, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)
