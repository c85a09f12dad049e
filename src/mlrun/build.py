"""Build what a recipe describes: the device, the seeds, transforms, datasets, model, criterion, optimizer.

Also the pre-flight that ``mlrun run`` and ``mlrun check`` share (device, output
folder, data path: decided once, before anything is written) and the probe that
pushes a few samples through model and criterion before any work. Nothing here
trains: predict and evaluate build their components from this module without
loading the training loop (:mod:`mlrun.trainer`).
"""

from __future__ import annotations

import platform
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import mlrun
from mlrun import batches
from mlrun.batches import DataPlan
from mlrun.channel_check import explain_channel_mismatch
from mlrun.components import provides_validation
from mlrun.decode_stage import dataset_inputs
from mlrun.errors import MlrunError, UsageError
from mlrun.plugin_guard import failure_site
from mlrun.plugin_hooks import hook_roots
from mlrun.precision import compile_problem
from mlrun.recipe import ComponentSpec, Recipe, transforms_for
from mlrun.runs import RunFolder
from mlrun.schedule import Schedule, build_schedule
from mlrun.splits import dataset_labels, validation_split

try:
    import numpy
except ImportError:  # pragma: no cover - numpy comes with torchvision
    numpy = None  # type: ignore[assignment]


@dataclass
class Built:
    """Everything a recipe describes, constructed and ready to train."""

    train_set: Any
    test_set: Any
    model: torch.nn.Module
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    device: torch.device
    #: The learning-rate schedule (a constant rate when the recipe has no [scheduler]).
    schedule: Schedule = field(default_factory=Schedule)
    #: With ``train.val_fraction``: the training and validation indices into ``train_set``,
    #: and the training data with the evaluation transforms (``train_set`` itself on the memory path).
    train_indices: torch.Tensor | None = None
    val_indices: torch.Tensor | None = None
    val_set: Any = None
    #: The width of the model's output (set by :func:`probe`): what metric factories get as ``num_classes``.
    num_classes: int | None = None

    @property
    def train_size(self) -> int:
        """How many samples an epoch trains on (the training split less the validation split)."""
        return len(self.train_indices) if self.train_indices is not None else len(self.train_set)


@dataclass(frozen=True)
class Preflight:
    """What a run will use, decided before anything is built or written."""

    device: torch.device
    data_plan: DataPlan


def preflight(recipe: Recipe, *, new_run: bool = True, local_rank: int | None = None) -> Preflight:
    """Check what validation cannot (it does no I/O): the device, the data path, the output folder.

    The one place a run's device and data path are decided; ``mlrun check`` calls it
    too, so it refuses exactly what a run would. ``new_run``: a new run folder will be
    created under ``train.output_dir``, which must then be writable (a resume writes
    into its existing folder). Raises :class:`UsageError`; writes nothing.
    """
    device = select_device(recipe.train.device, local_rank=local_rank)
    if recipe.train.precision == "16" and device.type != "cuda":
        raise UsageError(
            f"train.precision: '16' (float16 with a gradient scaler) needs a CUDA GPU, and this run "
            f"trains on the {device.type.upper()}",
            problems=['use precision = "bf16" (bfloat16 autocast works on CPUs) or "32"'],
        )
    if recipe.train.compile and (problem := compile_problem(device)):
        raise UsageError(problem)
    data_plan = batches.plan(recipe)
    if new_run:
        RunFolder.check_writable(recipe.train.output_dir)
    return Preflight(device, data_plan)


def select_device(setting: str, *, local_rank: int | None = None, cpu_fallback: bool = False) -> torch.device:
    """The device for ``train.device``: ``auto`` picks CUDA when available.

    ``cuda`` without a GPU is a usage error, unless ``cpu_fallback`` (a run trained on
    a GPU still predicts on a machine without one). Under torchrun, ``local_rank``
    picks each process's own GPU.
    """
    if setting == "auto" or (setting == "cuda" and cpu_fallback):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif setting == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            'train.device: \'cuda\' was requested but no CUDA GPU is available here; use device = "auto" or "cpu"'
        )
    else:
        device = torch.device(setting)
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's random number generators (and NumPy's, if it is installed)."""
    random.seed(seed)
    torch.manual_seed(seed)
    if numpy is not None:
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
    except ValueError as exc:  # the documented way for a factory to refuse a combination
        component = spec.component
        raise UsageError(
            f"{component.section}: {component.kind} '{component.name}' cannot be built with these settings: {exc}"
        ) from exc
    except Exception as exc:
        component = spec.component
        # The plugin author needs the line of their own code that failed, not torch's or mlrun's.
        site = None if spec.entry.plugin.builtin else failure_site(exc, hook_roots(component.factory))
        raise MlrunError(
            f"could not build {component.kind} '{component.name}' (from {spec.entry.plugin.label}): "
            f"{type(exc).__name__}{f' at {site}' if site else ''}: {exc}"
        ) from exc


def build(
    recipe: Recipe, device: torch.device | None = None, *, world_size: int = 1, data_path: str = "memory"
) -> Built:
    """Construct datasets, model, criterion, optimizer and schedule, seeded for reproducibility.

    ``device`` is the pre-flight's; without one, ``train.device`` is resolved here.
    ``world_size``: processes sharing each epoch (the schedule counts this process's steps).
    ``data_path``: the pre-flight's; on the loader path a validation split needs the
    training data a second time, with the evaluation transforms.
    """
    seed_everything(recipe.train.seed)
    device = device if device is not None else select_device(recipe.train.device)
    train_set = build_component(
        recipe.dataset, train=True, split="train", **dataset_inputs(recipe, compose, train=True)
    )
    test_set = build_component(
        recipe.dataset, train=False, split="test", **dataset_inputs(recipe, compose, train=False)
    )
    split = _validation_split(recipe, train_set, data_path)
    model = build_component(recipe.model).to(device)
    criterion = build_component(recipe.criterion)
    if isinstance(criterion, torch.nn.Module):
        criterion = criterion.to(device)
    optimizer = build_component(recipe.optimizer, params=model.parameters(), model=model)
    train_size = len(split[0]) if split[0] is not None else len(train_set)
    schedule = build_schedule(recipe, optimizer, train_size, world_size)
    return Built(train_set, test_set, model, criterion, optimizer, device, schedule, *split)


def _validation_split(recipe: Recipe, train_set: Any, data_path: str) -> tuple[Any, Any, Any]:
    """``(train_indices, val_indices, val_set)`` for ``train.val_fraction``; Nones without one.

    The indices depend only on the labels, the fraction and ``train.seed``: the same on
    both data paths and every rank. A fraction leaving a class out is a UsageError. A
    dataset that declares ``split`` gives its own validation split (indices 0..n-1 into it).
    """
    fraction, dataset = recipe.train.val_fraction, recipe.dataset.component
    if provides_validation(dataset):  # the dataset's own validation split wins
        val_set = build_component(
            recipe.dataset, train=True, split="val", **dataset_inputs(recipe, compose, train=False)
        )
        if len(val_set) == 0:
            raise UsageError(f"dataset '{dataset.name}' gives an empty validation split (split=\"val\")")
        return None, torch.arange(len(val_set)), val_set
    if fraction is None:
        return None, None, None
    labels = dataset_labels(train_set, getattr(dataset, "tensors", None))
    train_indices, val_indices = validation_split(
        labels, fraction, recipe.train.seed, class_names=getattr(dataset, "classes", ())
    )
    val_set = train_set
    if data_path != "memory":  # the memory path applies the evaluation pipeline to the same tensors
        val_set = build_component(recipe.dataset, train=True, **dataset_inputs(recipe, compose, train=False))
    return train_indices, val_indices, val_set


def probe(recipe: Recipe, built: Built) -> None:
    """Push test samples and one training sample through model and criterion, so a misfit fails before any work.

    Also checks that the dataset's labels fit the model's output width (11 classes
    into 10 scores would otherwise fail mid-epoch). Runs in eval mode (batch-norm
    statistics untouched), and gives back every random number it draws (a training
    sample's augmentations draw some), so the training that follows is bitwise the
    same as without the probe.
    """
    dataset = recipe.dataset.component.name
    if len(built.test_set) == 0:
        raise UsageError(f"dataset '{dataset}' has an empty test split")
    if len(built.train_set) == 0:
        raise UsageError(f"dataset '{dataset}' has an empty training split")
    saved_rng = _save_rng()
    model = built.model
    try:
        batches_to_try = [
            ("test", *_sample_batch(dataset, "test", built.test_set, list(range(min(2, len(built.test_set)))))),
            # Random transforms (augmentation) apply to training samples only: try one too.
            ("training", *_sample_batch(dataset, "training", built.train_set, [0])),
        ]
        with torch.no_grad():
            model.eval()
            for split, inputs, labels in batches_to_try:
                _try_batch(recipe, built, split, inputs, labels)
    finally:
        model.train()
        _restore_rng(saved_rng)


def _save_rng() -> tuple[Any, ...]:
    """Every global generator's state, so the probe's draws can be given back."""
    return (
        torch.get_rng_state(), random.getstate(), numpy.random.get_state() if numpy else None,
        torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    )  # fmt: skip


def _restore_rng(saved: tuple[Any, ...]) -> None:
    torch.set_rng_state(saved[0])
    random.setstate(saved[1])
    if numpy is not None:
        numpy.random.set_state(saved[2])
    if saved[3] is not None:
        torch.cuda.set_rng_state_all(saved[3])


def _sample_batch(dataset: str, split: str, data: Any, indices: list[int]) -> tuple[Any, Any]:
    """A few samples collated into a batch; a transform that fails on them is a usage error."""
    from torch.utils.data import default_collate

    try:
        return default_collate([data[i] for i in indices])
    except Exception as exc:
        raise UsageError(
            f"the transforms fail on a {split} sample of dataset '{dataset}': {type(exc).__name__}: {exc}",
            problems=[("check the transforms' parameters against the dataset's samples "
                       "(e.g. random_crop's size against 28x28 images)")],
        ) from exc  # fmt: skip


def _try_batch(recipe: Recipe, built: Built, split: str, inputs: Any, labels: Any) -> None:
    """Model and criterion on one batch; any failure but a label misfit names both and the shape."""
    dataset, model_name = recipe.dataset.component.name, recipe.model.component.name
    shape = list(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
    try:
        output = built.model(inputs.to(built.device))
        if split == "test":
            _check_label_width(recipe, built, labels, output)
            built.num_classes = int(output.shape[-1]) if output.dim() == 2 else None
        built.criterion(output, labels.to(built.device))
    except UsageError:
        raise
    except Exception as exc:
        explain_channel_mismatch(recipe, built.model, inputs, built.device)
        raise UsageError(
            f"model '{model_name}' and criterion '{recipe.criterion.component.name}' fail on a batch of "
            f"dataset '{dataset}' ({split} split, inputs of shape {shape}): {type(exc).__name__}: {exc}",
            problems=["check the model's input size and the transforms (e.g. model.input_size)"],
        ) from exc


def _check_label_width(recipe: Recipe, built: Built, labels: Any, output: torch.Tensor) -> None:
    """Refuse class labels the model has no output for."""
    if not (isinstance(labels, torch.Tensor) and labels.dim() == 1 and output.dim() == 2
            and not labels.is_floating_point()):  # fmt: skip
        return
    top = _largest_label(built, labels)
    width = output.shape[1]
    if top is None or top < width:
        return
    fixes = [
        f"set model.num_classes={top + 1}" if "num_classes" in recipe.model.params
        else f"use a model with {top + 1} outputs (the model's output size)"
    ]  # fmt: skip
    if "num_classes" in recipe.dataset.params:
        fixes.append(f"or set dataset.num_classes={width}")
    raise UsageError(
        f"dataset '{recipe.dataset.component.name}' has {top + 1} classes (labels 0..{top}) but model "
        f"'{recipe.model.component.name}' outputs {width} scores",
        problems=fixes,
    )


def _largest_label(built: Built, labels: torch.Tensor) -> int | None:
    """The largest label: the whole dataset's when it exposes them (torchvision style), else a sample's."""
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


def versions(recipe: Recipe) -> dict[str, str]:
    """The software a run used: Python, torch, mlrun, and each plugin that provided a component."""
    import torchvision

    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "mlrun": mlrun.__version__,
    }
    for spec in recipe.specs():
        plugin = spec.entry.plugin
        if not plugin.builtin and plugin.distribution:
            found[plugin.distribution] = plugin.version or "unknown"
    return found
