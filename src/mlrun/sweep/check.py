"""Everything a sweep is checked for before its first trial starts.

The base recipe is validated as ``mlrun run`` would; then every value a trial could
get (each choice, both ends of each range) goes through the same validation as a
command-line override, so a range that leaves a parameter's bounds is refused up
front, named by its ``sweep.space`` key. The objective must be a validation figure
(a test one only when acknowledged), and its direction comes from the metric.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from mlrun.errors import UsageError
from mlrun.recipe import SWEEP_SECTION, Recipe, validate_recipe
from mlrun.recipe_extends import read_recipe
from mlrun.recipe_file import apply_overrides, parse_override
from mlrun.selection import monitor_mode
from mlrun.settings import resolve_threads
from mlrun.sweep.space import Dimension, SweepSpec, read_sweep, split_overrides

if TYPE_CHECKING:
    from mlrun.registry import Registry


@dataclass
class Prepared:
    """A checked sweep: the base recipe data every trial starts from, and the search."""

    path: Path
    #: The recipe data with the plain overrides applied, no ``[sweep]`` section.
    base: dict[str, Any]
    spec: SweepSpec
    objective: str
    direction: str
    threads: int


def toml_value(value: Any) -> str:
    """A value as TOML text on one line, as an override writes it (``0.001``, ``"relu"``, ``[512, 256]``)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def prepare(
    recipe_path: str | Path,
    overrides: Sequence[str],
    registry: Registry,
    extra_data: Mapping[str, Any] | None = None,
    *,
    allow_test: bool = False,
) -> Prepared:
    """Read and check a sweep; raises :class:`UsageError` with every problem, before anything runs."""
    path = Path(recipe_path)
    plain, shorthand = split_overrides(overrides)
    data, origins, sources = read_recipe(path, plain, extra_data)
    section = data.pop(SWEEP_SECTION, None)
    base_recipe = validate_recipe(copy.deepcopy(data), registry, path=path, origins=origins, sources=sources)
    spec, problems = read_sweep(section, str(path), shorthand, allow_test=allow_test)
    if spec is None:
        _refuse(path, problems)
    assert spec is not None
    objective, direction, problems = _objective(spec, base_recipe, data, registry, path)
    for dim in spec.space:
        problems += _value_problems(dim, data, registry, path)
    if problems:
        _refuse(path, problems)
    return Prepared(path, data, spec, objective, direction, resolve_threads(base_recipe.train.threads))


def _refuse(path: Path, problems: list[str]) -> None:
    count = len(problems)
    raise UsageError(
        f"{path}: {count} sweep problem{'s' if count > 1 else ''} found; nothing was run", problems=problems
    )


def with_values(data: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of recipe data with ``key: value`` set as overrides would set them."""
    trial = copy.deepcopy(dict(data))
    apply_overrides(trial, [parse_override(f"{key}={toml_value(value)}") for key, value in values.items()])
    return trial


def _value_problems(dim: Dimension, data: Mapping[str, Any], registry: Registry, path: Path) -> list[str]:
    """Each value the dimension can take, validated as an override of the base recipe."""
    found: list[str] = []
    where = dim.source if dim.source.startswith("override") else f"{path}: {dim.source}"
    for value in dim.ends():
        text = f"{dim.key}={toml_value(value)}"
        try:
            trial = with_values(data, {dim.key: value})
            validate_recipe(trial, registry, path=path, origins={tuple(dim.key.split(".")): text})
        except UsageError as exc:
            for line in exc.problems or [str(exc)]:
                reason = line.partition(f"override '{text}': ")[2] or line
                problem = f"{where}: {dim.key} = {toml_value(value)} is refused: {reason}"
                if problem not in found:
                    found.append(problem)
    return found


def _objective(
    spec: SweepSpec, recipe: Recipe, data: Mapping[str, Any], registry: Registry, path: Path
) -> tuple[str, str, list[str]]:
    """The objective, ``maximize`` or ``minimize``, and the problems with it."""
    objective = spec.objective or recipe.train.monitor
    where = f"{path}: sweep.objective"
    if objective is None:
        return (
            "",
            "",
            [
                f"{where}: missing, and the recipe has no train.monitor: hold out a validation split and "
                'monitor it (train.val_fraction = 0.1, train.monitor = "val.accuracy"), or set sweep.objective'
            ],
        )
    split = objective.partition(".")[0]
    values: dict[str, Any] = {"train.monitor": objective}
    if split != "val":
        if not spec.allow_test_objective:
            return (
                objective,
                "",
                [
                    f"{where}: {objective} is a {split}-split figure: tuning on it makes the {split} figures "
                    "optimistic. Hold out a validation split (train.val_fraction = 0.1) and optimise "
                    'sweep.objective = "val.accuracy" — or acknowledge it with sweep.allow_test_objective = true '
                    "(or --allow-test-objective)"
                ],
            )
        values["train.select_on_test"] = True
    try:
        checked = validate_recipe(with_values(data, values), registry, path=path)
    except UsageError as exc:
        return objective, "", [f"{where}: {objective}: {line.split(': ', 2)[-1]}" for line in exc.problems]
    # train.mode speaks for train.monitor only; another objective's direction comes from its metric.
    settings = checked.train if objective == recipe.train.monitor else checked.train.model_copy(update={"mode": "auto"})
    mode = monitor_mode(settings, checked.metrics)
    return objective, "maximize" if mode == "max" else "minimize", []


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS and Windows
        return os.cpu_count() or 1


def check_workers(workers: int, threads: int, cores: int | None = None) -> None:
    """Refuse ``--workers`` that would give the machine more threads than it has cores."""
    cores = available_cores() if cores is None else cores
    if workers < 1:
        raise UsageError(f"--workers {workers}: give 1 or more")
    if workers * threads > cores:
        most = max(1, cores // threads)
        raise UsageError(
            f"--workers {workers} with train.threads = {threads} would run {workers * threads} threads on "
            f"{cores} CPU cores, and every trial would slow down: use --workers {most} (or fewer train.threads)"
        )
