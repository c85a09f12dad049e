"""The ``[sweep]`` section and the grid shorthand: what to search, how, and for how long.

Reading is strict and collects every problem, each named by its key path
(``sweep.space.optimizer.lr.log_uniform``), like the rest of a recipe. Nothing here
touches Optuna or the registry: :mod:`mlrun.sweep.check` validates the values against
the recipe, :mod:`mlrun.sweep.study` turns the space into an Optuna study.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mlrun.errors import did_you_mean
from mlrun.params import format_value
from mlrun.recipe_file import parse_override

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("median", "none")
DISTRIBUTIONS = ("choice", "uniform", "log_uniform", "int")
#: The settings of ``[sweep]`` besides ``space``, with their meaning (for errors and docs).
SETTINGS = {
    "trials": "how many trials (a grid: at most its size; default: the whole grid)",
    "sampler": "grid, random or tpe (default: grid when every key is a choice, else tpe)",
    "seed": "the sampler's seed (default 0): the same seed gives the same trials",
    "objective": "the figure to optimise, e.g. val.accuracy (default: train.monitor)",
    "pruner": "median (stop a trial whose epoch is worse than the median of earlier trials) or none",
    "prune_warmup_epochs": "epochs every trial runs before it may be pruned (default 1)",
    "prune_startup_trials": "trials that finish before any is pruned (default 2)",
    "allow_test_objective": "true: accept a test-split objective (its figures become optimistic)",
}
#: The most points a grid may have (a typo such as int = [0, 100000] is not a grid).
MAX_GRID = 10_000


@dataclass(frozen=True)
class Dimension:
    """One swept recipe key: ``choice`` values, or a ``uniform``/``log_uniform``/``int`` range."""

    key: str
    kind: str
    #: The choices (``choice``), else ``[low, high]``.
    values: list[Any]
    step: int = 1
    #: Where it was written: a ``sweep.space`` key path or an ``override '...'``.
    source: str = ""

    @property
    def discrete(self) -> bool:
        """Whether a grid can enumerate it."""
        return self.kind in ("choice", "int")

    def grid(self) -> list[Any]:
        """Every value of a discrete dimension, in order."""
        if self.kind == "int":
            return list(range(self.values[0], self.values[1] + 1, self.step))
        return list(self.values)

    def ends(self) -> list[Any]:
        """The values to validate up front: every choice, or both ends of a range."""
        return self.grid() if self.kind == "choice" else list(self.values)


@dataclass
class SweepSpec:
    """A whole sweep: its space and settings, as resolved from ``[sweep]`` and the command line."""

    space: list[Dimension]
    trials: int
    sampler: str = "tpe"
    seed: int = 0
    objective: str | None = None
    pruner: str = "none"
    prune_warmup_epochs: int = 1
    prune_startup_trials: int = 2
    allow_test_objective: bool = False

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of a grid, first key slowest (as written)."""
        keys = [d.key for d in self.space]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(d.grid() for d in self.space))]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``sweep.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepSpec:
        """Read back :meth:`to_dict`."""
        values = dict(data)
        values["space"] = [Dimension(**d) for d in values.get("space", [])]
        return cls(**values)


@dataclass
class _Reader:
    where: str
    problems: list[str] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        self.problems.append(f"{self.where}: {key}: {message}")


def split_top_level(text: str) -> list[str]:
    """Split ``a,b,[1, 2]`` at the commas that are outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[Dimension]]:
    """Command-line words: plain overrides, and ``key=v1,v2,...`` grid dimensions."""
    plain: list[str] = []
    dims: list[Dimension] = []
    for text in overrides:
        key, _, raw = text.partition("=")
        values = split_top_level(raw)
        if len(values) < 2:
            plain.append(text)
            continue
        parsed = [parse_override(f"{key}={value}").value for value in values]
        dims.append(Dimension(key.strip(), "choice", parsed, source=f"override '{text}'"))
    return plain, dims


def read_sweep(
    section: Any, where: str, shorthand: Sequence[Dimension], *, allow_test: bool = False
) -> tuple[SweepSpec | None, list[str]]:
    """The sweep a recipe's ``[sweep]`` section (may be None) and the grid shorthand ask for.

    Returns the spec (None when there are problems) and every problem found.
    """
    reader = _Reader(where)
    raw = {} if section is None else section
    if not isinstance(raw, Mapping):
        reader.add("sweep", "must be a table: [sweep]")
        return None, reader.problems
    for key in raw:
        if key != "space" and key not in SETTINGS:
            known = [*SETTINGS, "space"]
            reader.add(f"sweep.{key}", f"unknown setting{did_you_mean(key, known)} (settings: {', '.join(known)})")
    space = _read_space(raw.get("space", {}), reader)
    written = {d.key for d in space}
    for dim in shorthand:
        if dim.key in written:
            reader.add(f"sweep.space.{dim.key}", f"also given on the command line ({dim.source}): keep one")
    space += list(shorthand)
    if not space:
        reader.add("sweep.space", "empty: give the keys to search, e.g. optimizer.lr=0.1,0.01 or a [sweep.space] table")
    sampler = _choice(raw, "sampler", SAMPLERS, reader)
    sampler = sampler or ("grid" if space and all(d.kind == "choice" for d in space) else "tpe")
    spec = SweepSpec(space, trials=0, sampler=sampler)
    spec.seed = _count(raw, "seed", reader, low=0, default=0)
    spec.pruner = _choice(raw, "pruner", PRUNERS, reader) or "none"
    spec.prune_warmup_epochs = _count(raw, "prune_warmup_epochs", reader, low=0, default=1)
    spec.prune_startup_trials = _count(raw, "prune_startup_trials", reader, low=0, default=2)
    objective = raw.get("objective")
    if objective is not None and not (isinstance(objective, str) and "." in objective):
        reader.add(
            "sweep.objective", f'expected a figure such as "val.accuracy" or "val.loss", got {format_value(objective)}'
        )
    spec.objective = objective if isinstance(objective, str) else None
    acknowledged = raw.get("allow_test_objective", False)
    if not isinstance(acknowledged, bool):
        reader.add("sweep.allow_test_objective", f"must be true or false, got {format_value(acknowledged)}")
    spec.allow_test_objective = allow_test or acknowledged is True
    spec.trials = _trials(raw, spec, reader)
    return (None if reader.problems else spec), reader.problems


def _trials(raw: Mapping[str, Any], spec: SweepSpec, reader: _Reader) -> int:
    trials = _count(raw, "trials", reader, low=1, default=1) if "trials" in raw else 0
    if spec.sampler != "grid":
        if "trials" not in raw:
            reader.add(
                "sweep.trials", f"missing: how many trials should the {spec.sampler} sampler run? e.g. trials = 20"
            )
        return trials
    continuous = [d for d in spec.space if not d.discrete]
    for dim in continuous:
        reader.add(
            _where(dim),
            f"a grid cannot enumerate a continuous {dim.kind} range: list the values "
            f'(choice = [...]), or use sampler = "random" or "tpe" with trials = N',
        )
    if continuous or not spec.space:
        return trials
    size = math.prod(len(d.grid()) for d in spec.space)
    if size > MAX_GRID:
        reader.add(
            "sweep.space", f'the grid has {size} points (at most {MAX_GRID}): use fewer values or sampler = "tpe"'
        )
    elif trials > size:
        reader.add("sweep.trials", f"{trials} trials, but the grid has only {size} points: use trials = {size} or less")
    return trials or size


def _where(dim: Dimension) -> str:
    return dim.source or f"sweep.space.{dim.key}"


def _read_space(raw: Any, reader: _Reader, prefix: str = "") -> list[Dimension]:
    """``[sweep.space]``: quoted dotted keys (``"optimizer.lr" = {...}``) or nested tables."""
    if not isinstance(raw, Mapping):
        reader.add(
            "sweep.space" + prefix, 'must be a table of keys, e.g. "optimizer.lr" = { log_uniform = [1e-4, 1e-2] }'
        )
        return []
    dims: list[Dimension] = []
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        nested = isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values())
        if nested and not set(value) & {*DISTRIBUTIONS, "step"}:
            dims += _read_space(value, reader, key)  # a nested table: optimizer = { lr = {...} }
        else:
            dim = _dimension(key, value, reader)
            dims += [dim] if dim else []
    return dims


def _dimension(key: str, value: Any, reader: _Reader) -> Dimension | None:
    where = f"sweep.space.{key}"
    example = "{ choice = [a, b] }, { uniform = [low, high] }, { log_uniform = [low, high] } or { int = [low, high] }"
    if not isinstance(value, Mapping):
        reader.add(where, f"expected one of {example}, got {format_value(value)}")
        return None
    kinds = [k for k in value if k in DISTRIBUTIONS]
    for other in (k for k in value if k not in DISTRIBUTIONS and k != "step"):
        reader.add(
            f"{where}.{other}",
            f"unknown distribution{did_you_mean(other, DISTRIBUTIONS)} (one of: {', '.join(DISTRIBUTIONS)})",
        )
    if len(kinds) != 1:
        if not [k for k in value if k not in DISTRIBUTIONS and k != "step"]:
            reader.add(where, f"give exactly one distribution: {example}")
        return None
    kind, values = kinds[0], value[kinds[0]]
    where = f"{where}.{kind}"
    step = value.get("step", 1)
    if "step" in value and (kind != "int" or not _is_int(step) or step < 1):
        reader.add(f"sweep.space.{key}.step", "only an int range takes a step, a whole number >= 1")
        return None
    if kind == "choice":
        if not isinstance(values, list) or not values:
            reader.add(where, f"expected a non-empty list of values, got {format_value(values)}")
            return None
        return Dimension(key, kind, values, source=where)
    if not (isinstance(values, list) and len(values) == 2):
        reader.add(where, f"expected [low, high], got {format_value(values)}")
        return None
    low, high = values
    number = _is_int if kind == "int" else _is_number
    if not (number(low) and number(high)) or not low < high:
        what = "whole numbers" if kind == "int" else "numbers"
        reader.add(where, f"expected [low, high] with low < high, both {what}, got {format_value(values)}")
        return None
    if kind == "log_uniform" and low <= 0:
        reader.add(where, f"a log_uniform range must be above 0, got low = {format_value(low)}")
        return None
    return Dimension(key, kind, [float(low), float(high)] if kind != "int" else [low, high], step=step, source=where)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _choice(raw: Mapping[str, Any], key: str, allowed: Sequence[str], reader: _Reader) -> str | None:
    value = raw.get(key)
    if value is None or value in allowed:
        return value
    hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
    reader.add(f"sweep.{key}", f"must be one of {', '.join(allowed)}, got {format_value(value)}{hint}")
    return None


def _count(raw: Mapping[str, Any], key: str, reader: _Reader, *, low: int, default: int) -> int:
    value = raw.get(key, default)
    if not _is_int(value) or value < low:
        reader.add(f"sweep.{key}", f"must be a whole number >= {low}, got {format_value(value)} ({SETTINGS[key]})")
        return default
    return value
