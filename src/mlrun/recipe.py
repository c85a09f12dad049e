"""TOML recipes: load, apply overrides, validate against the registry, resolve defaults.

Every problem found is collected and reported together, each tagged with where
it came from (the recipe file or the override) and its dotted key path.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from mlrun.components import KINDS, Component
from mlrun.errors import UsageError, did_you_mean
from mlrun.metrics import metric_labels
from mlrun.params import format_value, looks_numeric, to_jsonable, validate_params
from mlrun.recipe_checks import (
    channel_problems,
    pairing,
    scheduler_monitor_problems,
    selection_problems,
    wants_pairing_check,
)
from mlrun.recipe_extends import read_recipe
from mlrun.registry import QUALIFIED, Entry, LookupProblem, Registry
from mlrun.settings import TrainSettings, run_name_from

#: The section of the training settings; every other section belongs to a component kind.
TRAIN_SECTION = "train"
#: Read by ``mlrun sweep`` (mlrun.sweep.space); a run ignores it.
SWEEP_SECTION = "sweep"


def transforms_for(specs: Sequence[ComponentSpec], *, train: bool) -> list[ComponentSpec]:
    """The transforms that apply to one split: random ones (augmentation) to training only."""
    return [spec for spec in specs if train or not getattr(spec.component, "random", False)]


@dataclass(frozen=True)
class ComponentSpec:
    """A component chosen by a recipe, with its validated parameters (defaults filled in)."""

    entry: Entry
    params: dict[str, Any]
    #: The name as the recipe chose it when it named the plugin too (``mlrun-lenet:adamw``):
    #: kept in the resolved recipe, so a resumed run picks the same component again.
    chosen_as: str | None = None

    @property
    def component(self) -> Component:
        """The registered component descriptor."""
        return self.entry.component

    def build(self, **injected: Any) -> Any:
        """Call the factory with the engine-supplied arguments and the recipe's parameters.

        Optional engine arguments (``Component.optional_injected``) reach only the
        factories that declare them.
        """
        optional = self.component.optional_injected.intersection(injected)
        if optional:
            accepted = inspect.signature(self.component.factory).parameters
            injected = {k: v for k, v in injected.items() if k not in optional or k in accepted}
        return self.component.factory(**injected, **self.params)

    def to_dict(self) -> dict[str, Any]:
        """The section as written in a resolved recipe (TOML cannot hold None: such keys are left out)."""
        values = {k: to_jsonable(v) for k, v in self.params.items() if v is not None}
        return {"name": self.chosen_as or self.component.name, **values}


@dataclass
class Recipe:
    """A validated recipe: every component resolved, every default filled in.

    ``components`` maps each kind (in declaration order) to its chosen component:
    one :class:`ComponentSpec` (or None, for an optional section left out) or, for a
    kind whose section is a list, a list of them. The classic kinds have typed accessors.
    """

    path: Path
    components: dict[str, ComponentSpec | list[ComponentSpec] | None]
    train: TrainSettings
    kinds: dict[str, type[Component]] = field(default_factory=lambda: dict(KINDS))
    warnings: list[str] = field(default_factory=list)

    def one(self, kind: str) -> ComponentSpec:
        """The component of a single-component kind (a required one is always present)."""
        spec = self.components.get(kind)
        if not isinstance(spec, ComponentSpec):
            raise KeyError(f"the recipe has no {kind}")
        return spec

    def many(self, kind: str) -> list[ComponentSpec]:
        """The components of a list kind, in order (empty when its section is left out)."""
        specs = self.components.get(kind)
        if not isinstance(specs, list):
            specs = self.components[kind] = []
        return specs

    def specs(self) -> list[ComponentSpec]:
        """Every chosen component, kind by kind."""
        found: list[ComponentSpec] = []
        for value in self.components.values():
            found += value if isinstance(value, list) else [value] if value is not None else []
        return found

    dataset = property(lambda self: self.one("dataset"), lambda self, v: self._set("dataset", v))
    transforms = property(lambda self: self.many("transform"), lambda self, v: self._set("transform", v))
    model = property(lambda self: self.one("model"), lambda self, v: self._set("model", v))
    criterion = property(lambda self: self.one("criterion"), lambda self, v: self._set("criterion", v))
    optimizer = property(lambda self: self.one("optimizer"), lambda self, v: self._set("optimizer", v))

    @property
    def metrics(self) -> list[ComponentSpec]:
        """The evaluation metrics, in recipe order (``accuracy`` when the recipe names none)."""
        return self.many("metric")

    @property
    def callbacks(self) -> list[ComponentSpec]:
        """The callbacks, in recipe order (none unless the recipe names them)."""
        return self.many("callback")

    @property
    def scheduler(self) -> ComponentSpec | None:
        """The learning-rate scheduler, if the recipe has a ``[scheduler]`` section."""
        spec = self.components.get("scheduler")
        return spec if isinstance(spec, ComponentSpec) else None

    def _set(self, kind: str, value: ComponentSpec | list[ComponentSpec]) -> None:
        self.components[kind] = value

    @property
    def run_name(self) -> str:
        """The run folder prefix: ``train.run_name``, else the recipe file's stem (made safe)."""
        return self.train.run_name or run_name_from(self.path)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe, ready for TOML: one entry per section present."""
        resolved: dict[str, Any] = {}
        for kind, value in self.components.items():
            section = self.kinds[kind].section
            if isinstance(value, list):
                resolved[section] = [spec.to_dict() for spec in value]
            elif value is not None:
                resolved[section] = value.to_dict()
        # TOML has no None: unset settings (train.val_fraction, train.monitor...) are left out.
        resolved["train"] = {k: v for k, v in self.train.model_dump().items() if v is not None}
        return resolved


# --------------------------------------------------------------------------- validation


@dataclass
class _Problems:
    """Problems collected during validation, each tagged with its source."""

    path: Path
    origins: dict[tuple[str, ...], str]
    #: The file each key came from, for recipes that extend others (mlrun.recipe_extends).
    sources: Mapping[tuple[str, ...], str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    #: Components whose name resolved though their parameters did not, by recipe key:
    #: cross-component checks still run on them, so every problem is reported at once.
    resolved: dict[str, Entry] = field(default_factory=dict)

    def add(self, key: str, message: str) -> None:
        parts = tuple(key.split("."))
        source = str(self.path)
        for n in range(len(parts), 0, -1):
            if parts[:n] in self.origins:
                source = f"override '{self.origins[parts[:n]]}'"
                break
            if parts[:n] in self.sources:
                source = self.sources[parts[:n]]
                break
        self.lines.append(f"{source}: {key}: {message}" if key else f"{source}: {message}")


def load_recipe(
    path: str | Path,
    registry: Registry,
    overrides: Sequence[str] = (),
    extra_data: Mapping[str, Any] | None = None,
) -> Recipe:
    """Read (with the files it extends), override, validate and resolve a recipe; raises :class:`UsageError`."""
    path = Path(path)
    data, origins, sources = read_recipe(path, overrides, extra_data)
    return validate_recipe(data, registry, path=path, origins=origins, sources=sources)


def validate_recipe(
    data: Mapping[str, Any],
    registry: Registry,
    *,
    path: Path,
    origins: dict[tuple[str, ...], str] | None = None,
    sources: Mapping[tuple[str, ...], str] | None = None,
) -> Recipe:
    """Validate parsed recipe data; raises :class:`UsageError` with every problem found.

    ``origins``: key paths set by overrides (their text); ``sources``: the file each key came from.
    """
    problems = _Problems(path, origins or {}, sources or {})
    sections = [cls.section for cls in registry.kinds.values()] + [TRAIN_SECTION, SWEEP_SECTION]
    for key in data:
        if key not in sections:
            problems.add(key, f"unknown section{did_you_mean(key, sections)} (sections: {', '.join(sections)})")
    components = {kind: _section(data, cls, registry, problems) for kind, cls in registry.kinds.items()}
    # The checks between components run whenever their names resolve, so they are reported
    # together with every other problem, not only once the rest is fixed.
    for key, message in channel_problems(components):
        problems.add(key, message)
    train = _train_settings(data.get(TRAIN_SECTION, {}), problems)
    if "metric" in registry.kinds:
        components["metric"] = _metrics(data, components.get("metric"), registry, problems)
        metrics, dataset = components["metric"], components.get("dataset")
        found = selection_problems(train, metrics, dataset)  # type: ignore[arg-type]
        if isinstance(components.get("scheduler"), ComponentSpec):
            found += scheduler_monitor_problems(train, components["scheduler"], metrics, dataset)  # type: ignore[arg-type]
        for key, message in found:
            problems.add(key, message)
    recipe_warnings: list[str] = []
    if wants_pairing_check(data.get(TRAIN_SECTION), train):
        model = components.get("model")
        output = model.component.output_kind(model.params) if isinstance(model, ComponentSpec) else None  # type: ignore[attr-defined]
        problem, warning = pairing(problems.resolved.get("model"), output, problems.resolved.get("criterion"), registry)
        if problem:
            problems.add("criterion.name", problem)
        recipe_warnings += [warning] if warning else []
    # Whether "cuda" is there and "memory" can serve these components is the pre-flight's
    # question (mlrun.build.preflight): validation stays pure, so a GPU-trained run still loads.

    if problems.lines:
        count = len(problems.lines)
        header = f"{path}: {count} problem{'s' if count > 1 else ''} found; nothing was run"
        raise UsageError(header, problems=problems.lines)
    assert train is not None
    return Recipe(path, components, train, kinds=dict(registry.kinds), warnings=recipe_warnings)


def _section(
    data: Mapping[str, Any], kind: type[Component], registry: Registry, problems: _Problems
) -> ComponentSpec | list[ComponentSpec] | None:
    """The component(s) one kind's section chooses; problems are collected, not raised."""
    section, name = kind.section, kind.kind
    if section not in data:
        if kind.required:
            names = ", ".join(registry.names(name))
            add = f"[[{section}]]" if kind.many else f"[{section}]"
            problems.add("", f"missing section {add}: add one with name = one of {names} (see `mlrun list {name}`)")
        return [] if kind.many else None
    raw = data[section]
    if not kind.many:
        return _component(raw, name, section, registry, problems)
    if not isinstance(raw, list):
        problems.add(section, f'must be a list of tables: write each as [[{section}]] with name = "..."')
        return []
    chosen = [_component(item, name, f"{section}.{index}", registry, problems) for index, item in enumerate(raw)]
    return [spec for spec in chosen if spec is not None]


def _metrics(data: Mapping[str, Any], chosen: Any, registry: Registry, problems: _Problems) -> list[ComponentSpec]:
    """The recipe's metrics: ``accuracy`` when it names none; the same metric twice is refused."""
    section = registry.kinds["metric"].section
    if section not in data:
        return [ComponentSpec(registry.get("metric", "accuracy"), {})]
    specs: list[ComponentSpec] = chosen if isinstance(chosen, list) else []
    labels = metric_labels([(spec.component.name, spec.params) for spec in specs])
    for index, label in enumerate(labels):
        if label in labels[:index]:
            problems.add(
                f"{section}.{index}",
                f"'{label}' is already metrics.{labels.index(label)}: remove one (a metric is computed once)",
            )
    return specs


def _component(raw: Any, kind: str, key: str, registry: Registry, problems: _Problems) -> ComponentSpec | None:
    if not isinstance(raw, dict):
        example = f"[[{key.split('.')[0]}]]" if key.count(".") else f"[{key}]"
        problems.add(key, f'must be a table with a name, e.g. {example} name = "..."')
        return None
    name = raw.get("name")
    if name is None:
        problems.add(
            f"{key}.name",
            f"missing: which {kind}? one of {', '.join(registry.names(kind))}",
        )
        return None
    if not isinstance(name, str):
        problems.add(f"{key}.name", f"expected a {kind} name (a string), got {format_value(name)}")
        return None
    if re.search(r"[.:/\\]", name) and not QUALIFIED.match(name):
        tail = re.split(r"[.:/\\]", name)[-1].lower()
        problems.add(
            f"{key}.name",
            f"'{name}' looks like an import path; recipes can only name registered components"
            f"{did_you_mean(tail, registry.names(kind))} (see `mlrun list {kind}`)",
        )
        return None
    try:
        entry = registry.get(kind, name)
    except LookupProblem as exc:
        problems.add(f"{key}.name", str(exc))
        return None
    problems.resolved[key] = entry
    raw_params = {k: v for k, v in raw.items() if k != "name"}
    params, param_problems = validate_params(entry.component, raw_params)
    for param_key, message in param_problems:
        problems.add(f"{key}.{param_key}", message)
    if param_problems:
        return None
    if entry.component.validate is not None:
        try:
            entry.component.validate(params)
        except ValueError as exc:
            problems.add(key, str(exc))
            return None
    return ComponentSpec(entry, params, chosen_as=entry.qualified_name if QUALIFIED.match(name) else None)


def _train_settings(raw: Any, problems: _Problems) -> TrainSettings | None:
    if not isinstance(raw, dict):
        problems.add("train", "must be a table: [train]")
        return None
    try:
        return TrainSettings.model_validate(raw)
    except pydantic.ValidationError as exc:
        fields = list(TrainSettings.model_fields)
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            value = err.get("input")
            if err["type"] == "extra_forbidden":
                message = f"unknown setting{did_you_mean(key, fields)} (settings: {', '.join(fields)})"
            elif err["type"] == "unsafe_run_name":
                shown = format_value(value if len(value) <= 60 else value[:20] + "...")
                message = f"{shown} {err['msg']}"
            else:
                info = TrainSettings.model_fields.get(key)
                description = f" ({info.description})" if info and info.description else ""
                reason = err["msg"].replace("Input should be", "must be")
                message = f"{reason}, got {format_value(value)}{description}"
                if isinstance(value, str) and looks_numeric(value):
                    message += f" — write it without quotes: {key.split('.')[-1]} = {value}"
            problems.add(f"train.{key}", message)
        return None
