"""Resuming honestly: what a resumed run may change, what it may not, and proof of both.

A checkpoint records the resolved recipe it was trained with. On resume, the recipe
asked for (the run folder's ``recipe.toml`` plus any overrides) is compared with that
record, not with the file on disk, so a hand-edited ``recipe.toml`` counts as a change.

- Changes that cannot be honoured (another model, other data, another batch size…)
  are refused with the reason, ``--force`` or not: the checkpoint's weights, optimizer
  state and position in the data only mean something under the recipe that made them.
- Changes that can be honoured (learning rate, epochs, weight decay…) need ``--force``
  and are then truly applied: the optimizer's hyper-parameters are set from the recipe
  after its state is loaded.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlrun.errors import UsageError
from mlrun.params import format_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: Recipe keys (or key prefixes) a resume cannot honour, and why.
FIXED: dict[str, str] = {
    "dataset": "the weights and the position in the data belong to the data they were trained on",
    "transforms": "the weights were trained on inputs transformed this way",
    "model": "the checkpoint's weights fit only the model they were trained with",
    "optimizer.name": "the optimizer's state (e.g. Adam's moment estimates) belongs to that optimizer",
    "optimizer.decay_bias_and_norm": "the optimizer's state is stored per parameter group",
    "scheduler": "the schedule's position and shape belong to the schedule the run was trained with",
    "train.batch_size": "the position inside the epoch is counted in batches of the old size",
    "train.seed": "the seed already decided this run's data order and initial weights",
    "train.shuffle": "the data order of the epoch in progress is already drawn",
    "train.output_dir": "a resumed run stays in its own folder",
    "train.run_name": "a resumed run stays in its own folder",
    "train.val_fraction": "the validation split decided which samples this run trains on",
    "metrics": "metrics.csv already has one column per metric, and best.pt was chosen by them",
    "train.monitor": "best.pt and the early-stopping counter belong to the figure monitored so far",
    "train.mode": "best.pt and the early-stopping counter belong to the direction monitored so far",
}


#: Keys newer versions of mlrun add to every resolved recipe, with the value that does what an
#: older run did: a checkpoint whose recipe lacks the key is no change when the recipe keeps it.
ADDED_KEYS: dict[str, Any] = {
    "metrics": [{"name": "accuracy"}],
    "train.mode": "auto",
    "train.min_delta": 0.0,
    "train.select_on_test": False,
}

#: Why a run with a scheduler cannot take a new learning rate on resume.
SCHEDULED_LR = "the scheduler sets the learning rate from its saved state"

#: Where the data is read from, not what it is: moving a dataset may be honoured.
RELOCATABLE = ("dataset.root", "dataset.download")


def recipe_record(resolved: Mapping[str, Any]) -> str:
    """The resolved recipe as stored in a checkpoint (JSON text: loadable weights-only)."""
    return json.dumps(resolved, sort_keys=True)


def changed_keys(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved recipes."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(set(before) | set(after), key=lambda k: (k not in before, k))
        return [c for k in keys for c in changed_keys(before.get(k), after.get(k), f"{prefix}{k}.")]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        pairs = enumerate(zip(before, after))
        return [c for i, (b, a) in pairs for c in changed_keys(b, a, f"{prefix}{i}.")]
    return [] if _same(before, after) else [prefix.rstrip(".")]


def _same(before: Any, after: Any) -> bool:
    # TOML and JSON round trips turn tuples into lists; the values are what matter.
    if isinstance(before, (list, tuple)) and isinstance(after, (list, tuple)):
        return len(before) == len(after) and all(_same(b, a) for b, a in zip(before, after))
    return bool(before == after)


def fixed_reason(key: str) -> str | None:
    """Why ``key`` cannot change on resume, or None when the change can be honoured."""
    if key in RELOCATABLE:
        return None
    for prefix, reason in FIXED.items():
        if key == prefix or key.startswith(prefix + "."):
            return reason
    return None


def saved_recipe(saved: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """The recipe a checkpoint was trained with.

    Checkpoints record it since this version; an older one is taken to match the run
    folder's ``recipe.toml``, as older mlrun versions assumed.
    """
    record = saved.get("recipe")
    if isinstance(record, str):
        return dict(json.loads(record))
    path = folder / "recipe.toml"
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the run's recipe ({exc})") from exc


def epochs_done(saved: Mapping[str, Any]) -> int:
    """How many epochs a checkpoint has finished (or started, when taken mid-epoch)."""
    epoch, step = int(saved.get("epoch", 1)), int(saved.get("step", 0))
    return epoch if step else epoch - 1


def check_changes(
    saved: Mapping[str, Any],
    requested: Mapping[str, Any],
    *,
    folder: Path,
    force: bool,
    epochs_done: int,
) -> list[str]:
    """The keys a resume changes, once they are known to be allowed; raises otherwise.

    ``saved`` is the recipe recorded in the checkpoint, ``requested`` the one to resume with.
    """
    changes = [
        key for key in changed_keys(dict(saved), dict(requested))
        if not _same_choice(_value_at_raw(saved, key), _value_at_raw(requested, key), folder)
        and not _added_default(saved, requested, key)
    ]  # fmt: skip
    described = [f"{key}: {_value_at(saved, key)} -> {_value_at(requested, key)}" for key in changes]
    scheduled = "scheduler" in saved
    refused = [
        f"{line} ({reason})"
        for key, line in zip(changes, described)
        if (reason := fixed_reason(key) or (SCHEDULED_LR if scheduled and key == "optimizer.lr" else None))
    ]
    if refused:
        raise UsageError(
            f"cannot resume {folder} with this recipe: the checkpoint cannot honour "
            f"{'these changes' if len(refused) > 1 else 'this change'}",
            problems=[
                *refused,
                f"to train with them, start a new run: mlrun {folder / 'recipe.toml'} KEY=VALUE ...",
            ],
        )
    epochs = requested.get("train", {}).get("epochs")
    if isinstance(epochs, int) and epochs < epochs_done:
        raise UsageError(
            f"cannot resume {folder} with train.epochs = {epochs}: it has already trained {epochs_done} epochs",
            problems=[f"give train.epochs={epochs_done} or more"],
        )
    if changes and not force:
        raise UsageError(
            f"the recipe differs from the one {folder} was trained with; refusing to resume",
            problems=[
                *(f"changed: {line}" for line in described),
                "add --force to resume with these changes (they apply from the next step on)",
            ],
        )
    return changes


def _same_choice(before: Any, after: Any, folder: Path) -> bool:
    """``lion`` and ``mlrun-lenet:lion`` name the same component when the run's run.json records mlrun-lenet.

    Once a second plugin gives the same name, a run must be resumed with the qualified
    name; that is no change of component if the qualifier is the plugin the run used.
    """
    from mlrun.plugins import normalize
    from mlrun.registry import QUALIFIED
    from mlrun.runs import recorded_plugins

    if not (isinstance(before, str) and isinstance(after, str)):
        return False
    plain, qualified = sorted((before, after), key=lambda name: ":" in name)
    match = QUALIFIED.match(qualified)
    if ":" in plain or match is None or match["name"] != plain:
        return False
    return normalize(match["plugin"]) in {normalize(dist) for dist in recorded_plugins(folder)}


_UNSET = object()


def _added_default(saved: Mapping[str, Any], requested: Mapping[str, Any], key: str) -> bool:
    """A key an older checkpoint's recipe lacks, requested with the value that behaves as before."""
    return (
        key in ADDED_KEYS
        and _value_at_raw(saved, key) is _UNSET
        and _same(requested_value(requested, key), ADDED_KEYS[key])
    )


def requested_value(recipe: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key (None when absent)."""
    value = _value_at_raw(recipe, key)
    return None if value is _UNSET else value


def _value_at_raw(recipe: Mapping[str, Any], key: str) -> Any:
    node: Any = recipe
    for part in key.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _UNSET
    return node


def _value_at(recipe: Mapping[str, Any], key: str) -> str:
    node = _value_at_raw(recipe, key)
    return "(unset)" if node is _UNSET else format_value(node)
