"""Checks between a recipe's components: per-channel values against the dataset, model output against criterion.

They run whenever the components' names resolve, so their problems are reported
together with every other problem of the recipe (see :func:`mlrun.recipe.validate_recipe`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlrun.components import OUTPUT_KINDS
from mlrun.errors import did_you_mean

if TYPE_CHECKING:
    from mlrun.registry import Entry, Registry

OUTPUT_WORDS = {"logits": "raw logits", "log_probs": "log-probabilities", "probs": "probabilities"}


def channel_problems(components: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Per-channel transform values (normalize's mean) whose count fits not the dataset's channels."""
    dataset, transforms = getattr(components.get("dataset"), "component", None), components.get("transform")
    channels = getattr(dataset, "channels", None)
    if dataset is None or channels is None or not isinstance(transforms, list):
        return []
    found = []
    for index, spec in enumerate(transforms):
        for param in getattr(spec.component, "per_channel", ()):
            values = spec.params.get(param)
            if isinstance(values, (list, tuple)) and len(values) not in (1, channels):
                plural = "s" if channels != 1 else ""
                found.append((
                    f"transforms.{index}.{param}",
                    f"{len(values)} values, but dataset '{dataset.name}' has {channels} channel{plural}: "
                    f"give {channels} value{plural}" + ("" if channels == 1 else " or 1 for all"),
                ))  # fmt: skip
    return found


def wants_pairing_check(raw_train: Any, train: Any) -> bool:
    """train.check_model_criterion, read from the raw [train] table when the settings have problems."""
    if train is not None:
        return bool(train.check_model_criterion)
    return not (isinstance(raw_train, dict) and raw_train.get("check_model_criterion") is False)


def pairing(
    model: Entry | None, output: str | None, criterion: Entry | None, registry: Registry
) -> tuple[str | None, str | None]:
    """The classic rule: log_softmax goes with NLLLoss, raw logits with CrossEntropyLoss.

    ``output`` is what the model outputs with the recipe's parameters (None when they did
    not validate: then the model's fixed output kind, if it has one). Returns
    ``(problem, warning)``, either or both None.
    """
    if model is None or criterion is None:
        return None, None
    if output is None:
        declared = getattr(model.component, "output", None)
        output = declared if declared in OUTPUT_KINDS else None
    if output is None:
        return None, None
    model_name, criterion_name = model.component.name, criterion.component.name
    expects: tuple[str, ...] = getattr(criterion.component, "expects", ())
    if output in expects:
        return None, None
    if output == "log_probs" and "logits" in expects:
        return None, (
            f"model '{model_name}' already outputs log-probabilities, so criterion '{criterion_name}' applies "
            "log_softmax twice: the loss is the same but the work is wasted; criterion 'nll' fits"
        )
    fitting = [
        name
        for name in registry.names("criterion")
        if output in getattr(registry.get("criterion", name).component, "expects", ())
    ]
    fix = f"use criterion {' or '.join(repr(n) for n in fitting)}" if fitting else "choose another model"
    expected = " or ".join(OUTPUT_WORDS.get(e, e) for e in expects if e in OUTPUT_KINDS)
    return (
        f"'{criterion_name}' expects {expected}, but model '{model_name}' outputs {OUTPUT_WORDS.get(output, output)}, "
        f"which would silently train badly; {fix} (or set train.check_model_criterion = false to train anyway)"
    ), None


def has_validation(train: Any, dataset: Any) -> bool:
    """Whether a run has a validation split: ``train.val_fraction``, or the dataset's own (``split="val"``)."""
    from mlrun.components import provides_validation

    component = getattr(dataset, "component", None)
    return train.val_fraction is not None or (component is not None and provides_validation(component))


def monitor_names(train: Any, metrics: Sequence[Any], dataset: Any = None) -> list[str]:
    """The figures ``train.monitor`` may name: the evaluated split's loss and scalar metrics."""
    from mlrun.metrics import metric_labels

    split = "val" if has_validation(train, dataset) else "test"
    labels = metric_labels([(spec.component.name, spec.params) for spec in metrics])
    scalar = [label for label, spec in zip(labels, metrics) if getattr(spec.component, "scalar", True)]
    return [f"{split}.loss", *(f"{split}.{label}" for label in scalar)]


def selection_problems(train: Any, metrics: Sequence[Any], dataset: Any = None) -> list[tuple[str, str]]:
    """``train.monitor`` naming a figure that is not computed; selection on the test split unacknowledged."""
    if train is None or (train.monitor is None and train.patience is None):
        return []
    found = []
    validation = has_validation(train, dataset)
    if not validation and not train.select_on_test:
        setting = "train.patience" if train.patience is not None else "train.monitor"
        found.append((
            setting,
            "without a validation split the test split would select the model, and its figures would be "
            "optimistic: add train.val_fraction = 0.1 (say), or set train.select_on_test = true to accept that",
        ))  # fmt: skip
    if train.monitor is None:
        found.append(("train.patience", 'early stopping needs a figure to watch: set train.monitor = "val.loss" (say)'))
        return found
    names = monitor_names(train, metrics, dataset)
    if train.monitor not in names:
        split, _, name = train.monitor.partition(".")
        evaluated = names[0].split(".")[0]
        if split == "val" and not validation and not train.select_on_test:
            return found  # the first problem already says to add a validation split
        if split in ("val", "test") and split != evaluated:
            hint = f" (no {split} figures are computed each epoch: the evaluated split is '{evaluated}')"
        else:
            hint = did_you_mean(train.monitor, names) or (
                f' (add [[metrics]] name = "{name}" to compute it)' * bool(name)
            )
        found.append(("train.monitor", f"'{train.monitor}' is not computed{hint}; choose one of {', '.join(names)}"))
    return found


def scheduler_monitor_problems(
    train: Any, scheduler: Any, metrics: Sequence[Any], dataset: Any = None
) -> list[tuple[str, str]]:
    """A scheduler watching a figure (``scheduler.monitor``) that no evaluation computes."""
    monitor = (
        getattr(scheduler, "params", {}).get("monitor") if getattr(scheduler.component, "monitor", False) else None
    )
    if train is None or not isinstance(monitor, str):
        return []
    names = monitor_names(train, metrics, dataset)
    evaluated = [name.split(".", 1)[1] for name in names]
    if monitor in names or monitor in evaluated:
        return []
    return [("scheduler.monitor", f"'{monitor}' is not computed{did_you_mean(monitor, names)}; choose one of "
             f"{', '.join(evaluated + names)}")]  # fmt: skip
