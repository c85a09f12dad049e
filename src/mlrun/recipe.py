"""TOML recipes: load, apply overrides, validate against the registry, resolve defaults.

Every problem found is collected and reported together, each tagged with where
it came from (the recipe file or the override) and its dotted key path.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from mlrun.components import OUTPUT_KINDS, Component
from mlrun.errors import UsageError, did_you_mean
from mlrun.params import format_value, looks_numeric, to_jsonable, validate_params
from mlrun.registry import Entry, LookupProblem, Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: Sections naming one component, in the order of the classic recipe.
COMPONENT_SECTIONS: tuple[str, ...] = ("dataset", "model", "criterion", "optimizer")
SECTIONS: tuple[str, ...] = ("dataset", "transforms", "model", "criterion", "optimizer", "train")
OUTPUT_WORDS = {"logits": "raw logits", "log_probs": "log-probabilities", "probs": "probabilities"}
#: A recipe larger than this is not a recipe (and /dev/zero would be read forever).
MAX_RECIPE_BYTES = 1 << 20
#: Deepest nesting of tables and arrays a recipe may have; real recipes need about 5.
MAX_NESTING = 32
#: Longest run name: a ``-YYYYmmdd-HHMMSS-N`` suffix follows, and file names stop at 255 bytes.
MAX_RUN_NAME = 100
RUN_NAME_RULE = (
    "a run name is one folder name inside train.output_dir: use letters, digits, '-', '_' "
    f"and '.', not starting with '.', at most {MAX_RUN_NAME} characters"
)


def safe_run_name(name: str) -> str | None:
    """Why ``name`` cannot prefix a run folder inside ``output_dir``, or None when it can.

    Refuses anything that could leave ``output_dir`` (separators, ``..``, absolute
    paths), hide the folder from ``mlrun runs`` (a leading dot), or break file names
    (control characters, over-long names). The message ends with what is allowed.
    """
    problem = None
    if not name:
        problem = "is empty"
    elif len(name) > MAX_RUN_NAME:
        problem = f"is {len(name)} characters long"
    elif bad := next((c for c in name if unicodedata.category(c).startswith("C")), None):
        problem = f"contains a control character (U+{ord(bad):04X})"
    elif name.startswith(("/", "\\")) or os.path.isabs(name):
        problem = "is an absolute path"
    elif sep := next((c for c in name if c in "/\\"), None):
        problem = f"contains a path separator ({sep!r})"
    elif name.startswith("."):
        # '.' and '..' are the folder itself and its parent; '.x' is hidden from `mlrun runs`.
        problem = "starts with '.' (a hidden folder)" if name.strip(".") else "is not a folder name"
    elif bad := next((c for c in name if not re.fullmatch(r"[\w.-]", c)), None):
        problem = f"contains {bad!r}"
    return f"{problem}; {RUN_NAME_RULE}" if problem else None


def run_name_from(path: Path) -> str:
    """A safe run name from a recipe file's stem (``.hidden.toml`` gives ``hidden``)."""
    cleaned = re.sub(r"[^\w.-]+", "_", path.stem).lstrip(".")[:MAX_RUN_NAME]
    return cleaned or "run"


class TrainSettings(BaseModel):
    """The ``[train]`` section: how to train, where results go."""

    # allow_inf_nan=False: a float setting of inf/nan is never meant.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    epochs: int = Field(5, ge=1, description="passes over the training split")
    batch_size: int = Field(64, ge=1, description="samples per optimizer step")
    eval_batch_size: int = Field(1000, ge=1, description="samples per batch when evaluating")
    shuffle: bool = Field(True, description="reshuffle the training split every epoch")
    # NumPy's legacy seeding (seed_everything) takes 32-bit seeds only.
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed for weights, shuffling and augmentation")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' uses CUDA when available, else the CPU"
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0: load in-process)")
    output_dir: str = Field("runs", description="folder that receives one run folder per run")
    run_name: str = Field("", description="run folder prefix; empty: the recipe's file name")
    check_model_criterion: bool = Field(
        True, description="refuse a criterion that does not fit the model's output"
    )
    data_path: Literal["auto", "memory", "loader"] = Field(
        "auto",
        description="'memory': dataset tensors in memory, transforms per batch (fast); "
        "'loader': a DataLoader with per-sample transforms; 'auto': memory when possible",
    )
    checkpoint_every_steps: int = Field(
        0, ge=0, description="also checkpoint every N optimizer steps (0: only after each epoch)"
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend under torchrun; 'auto': nccl on CUDA, else gloo"
    )
    dist_timeout_s: int = Field(
        300, ge=10, description="seconds a distributed collective may wait before the job fails"
    )
    flush_denormal: bool = Field(
        True, description="flush denormal floats to zero on the CPU (faster; changes tiny values)"
    )

    @field_validator("run_name")
    @classmethod
    def _run_name_is_a_folder_name(cls, value: str) -> str:
        # Empty means "the recipe's file name", which run_name_from makes safe.
        problem = safe_run_name(value) if value else None
        if problem:
            raise PydanticCustomError("unsafe_run_name", "{problem}", {"problem": problem})
        return value


def transforms_for(specs: Sequence[ComponentSpec], *, train: bool) -> list[ComponentSpec]:
    """The transforms that apply to one split: random ones (augmentation) to training only."""
    return [spec for spec in specs if train or not getattr(spec.component, "random", False)]


def train_reference() -> list[tuple[str, str, str, str]]:
    """``(key, type, default, meaning)`` for every ``[train]`` setting, for docs and help."""
    from typing import Annotated

    from mlrun.params import describe_type

    rows = []
    for name, info in TrainSettings.model_fields.items():
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        rows.append((name, describe_type(annotation), format_value(info.default), info.description or ""))
    return rows


@dataclass(frozen=True)
class ComponentSpec:
    """A component chosen by a recipe, with its validated parameters (defaults filled in)."""

    entry: Entry
    params: dict[str, Any]

    @property
    def component(self) -> Component:
        """The registered component descriptor."""
        return self.entry.component

    def build(self, **injected: Any) -> Any:
        """Call the factory with the engine-supplied arguments and the recipe's parameters."""
        return self.component.factory(**injected, **self.params)

    def to_dict(self) -> dict[str, Any]:
        """The section as written in a resolved recipe (TOML cannot hold None: such keys are left out)."""
        values = {k: to_jsonable(v) for k, v in self.params.items() if v is not None}
        return {"name": self.component.name, **values}


@dataclass
class Recipe:
    """A validated recipe: every component resolved, every default filled in."""

    path: Path
    dataset: ComponentSpec
    transforms: list[ComponentSpec]
    model: ComponentSpec
    criterion: ComponentSpec
    optimizer: ComponentSpec
    train: TrainSettings
    warnings: list[str] = field(default_factory=list)

    @property
    def run_name(self) -> str:
        """The run folder prefix: ``train.run_name``, else the recipe file's stem (made safe)."""
        return self.train.run_name or run_name_from(self.path)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe, ready for TOML."""
        return {
            "dataset": self.dataset.to_dict(),
            "transforms": [t.to_dict() for t in self.transforms],
            "model": self.model.to_dict(),
            "criterion": self.criterion.to_dict(),
            "optimizer": self.optimizer.to_dict(),
            "train": self.train.model_dump(),
        }


# --------------------------------------------------------------------------- reading


def read_recipe_file(path: Path) -> dict[str, Any]:
    """Parse a TOML recipe file; any reading or syntax problem becomes a :class:`UsageError`."""
    if path.is_symlink() and not path.exists():
        raise UsageError(_broken_link(path))
    if not path.exists():
        hint = ""
        if path.suffix != ".toml" and path.with_suffix(".toml").exists():
            hint = f" — did you mean {path.with_suffix('.toml')}?"
        elif path.parent.is_dir():
            siblings = [p.name for p in path.parent.glob("*.toml")]
            hint = did_you_mean(path.name, siblings).replace("'", "")
            hint = hint.replace("mean ", f"mean {path.parent}/") if hint else ""
        raise UsageError(f"{path}: no such recipe file{hint}")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; give a recipe file such as recipes/summary.toml")
    data = _read_limited(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the recipe as UTF-8"
        ) from exc
    try:
        parsed = tomllib.loads(text)
    except RecursionError:  # tomllib recurses per nesting level; keep the file's name in the error
        raise UsageError(_too_deep(str(path))) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        where = f"{path}:{found.group(1)}:{found.group(2)}" if found else str(path)
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise UsageError(f"{where}: TOML syntax error: {reason}") from exc
    if nesting(parsed) > MAX_NESTING:  # validation, JSON and TOML output all recurse too
        raise UsageError(_too_deep(str(path)))
    return parsed


def _broken_link(path: Path) -> str:
    """Describe a symbolic link that leads nowhere: dangling, or a loop."""
    try:
        target = os.readlink(path)
    except OSError:  # pragma: no cover - it was a link a moment ago
        target = "?"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path}: symbolic link loop ({path} -> {target} -> ...); point it at a recipe file"
    return f"{path}: broken symbolic link (points to {target}, which does not exist); fix or remove the link"


def _read_limited(path: Path) -> bytes:
    """The file's bytes, refusing devices, pipes and anything over MAX_RECIPE_BYTES before reading."""
    limit = f"{MAX_RECIPE_BYTES // (1 << 20)} MiB"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the recipe ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(
                f"{path}: is not a regular file (a device, pipe or socket); "
                "give a recipe file such as recipes/summary.toml"
            )
        if info.st_size > MAX_RECIPE_BYTES:
            raise UsageError(f"{path}: is {info.st_size} bytes; a recipe is at most {limit}: is this the right file?")
        try:
            # At most one byte past the limit: a file that grows (or lies about its size) stops here.
            data = handle.read(MAX_RECIPE_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"{path}: cannot read the recipe ({exc.strerror})") from exc
    if len(data) > MAX_RECIPE_BYTES:
        raise UsageError(f"{path}: is over {limit}; a recipe is at most {limit}: is this the right file?")
    return data


def nesting(value: Any) -> int:
    """How deeply tables and arrays nest in ``value`` (a scalar is 0); iterative, so any depth is safe."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            break  # the answer is already "too deep"
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(where: str) -> str:
    return f"{where}: nested too deeply (tables or arrays over {MAX_NESTING} levels); a recipe needs only a few"


# --------------------------------------------------------------------------- overrides


@dataclass(frozen=True)
class Override:
    """One ``key.path=value`` from the command line."""

    text: str
    path: tuple[str, ...]
    value: Any


def parse_override(text: str) -> Override:
    """Parse ``key.path=value``; the value is read as TOML, or else taken as a bare string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(
            f"override '{text}': expected key.path=value, e.g. optimizer.lr=0.003 or train.epochs=1"
        )
    path = tuple(key.split("."))
    if any(not part for part in path):
        raise UsageError(f"override '{text}': empty part in key path '{key}'")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except RecursionError:
        raise UsageError(_too_deep(f"override '{text}'")) from None
    except tomllib.TOMLDecodeError:
        if not re.fullmatch(r"[^\s\"'\[\]{}=,#]+", raw):
            raise UsageError(
                f"override '{text}': '{raw}' is not a TOML value; quote strings "
                "(key='a b'), write lists as [1, 2]"
            ) from None
        value = raw  # a bare word such as cpu, mlp or a path: taken as a string
    # The key path and the value together bound how deep the override makes the recipe.
    if len(path) + nesting(value) > MAX_NESTING:
        raise UsageError(_too_deep(f"override '{text}'"))
    return Override(text, path, value)


def apply_overrides(data: dict[str, Any], overrides: Sequence[Override]) -> dict[tuple[str, ...], str]:
    """Set each override in the raw recipe; return which key paths came from which override."""
    origins: dict[tuple[str, ...], str] = {}
    for override in overrides:
        node: Any = data
        for depth, part in enumerate(override.path[:-1]):
            so_far = ".".join(override.path[: depth + 1])
            if isinstance(node, list):
                node = node[_list_index(override, part, node, so_far)]
            elif isinstance(node, dict):
                if part not in node:  # the override creates this table: problems in it are its own
                    origins[override.path[: depth + 1]] = override.text
                node = node.setdefault(part, [] if part == "transforms" and depth == 0 else {})
            else:
                raise UsageError(f"override '{override.text}': {so_far} is a value, not a table")
        last = override.path[-1]
        if isinstance(node, list):
            node[_list_index(override, last, node, ".".join(override.path))] = override.value
        elif isinstance(node, dict):
            node[last] = override.value
        else:
            raise UsageError(
                f"override '{override.text}': {'.'.join(override.path[:-1])} is a value, not a table"
            )
        origins[override.path] = override.text
    return origins


def _list_index(override: Override, part: str, items: list[Any], where: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise UsageError(
            f"override '{override.text}': {where}: index must be 0..{len(items) - 1} "
            f"(the list has {len(items)} entries)"
        )
    return int(part)


# --------------------------------------------------------------------------- validation


@dataclass
class _Problems:
    """Problems collected during validation, each tagged with its source."""

    path: Path
    origins: dict[tuple[str, ...], str]
    lines: list[str] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        parts = tuple(key.split("."))
        source = str(self.path)
        for n in range(len(parts), 0, -1):
            if parts[:n] in self.origins:
                source = f"override '{self.origins[parts[:n]]}'"
                break
        self.lines.append(f"{source}: {key}: {message}" if key else f"{source}: {message}")


def load_recipe(
    path: str | Path,
    registry: Registry,
    overrides: Sequence[str] = (),
    extra_data: Mapping[str, Any] | None = None,
) -> Recipe:
    """Read, override, validate and resolve a recipe. Raises :class:`UsageError` listing every problem."""
    path = Path(path)
    data = read_recipe_file(path)
    if extra_data:
        _merge(data, extra_data)
    origins = apply_overrides(data, [parse_override(o) for o in overrides])
    return validate_recipe(data, registry, path=path, origins=origins)


def _merge(data: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            _merge(data[key], value)
        else:
            data[key] = value


def validate_recipe(
    data: Mapping[str, Any],
    registry: Registry,
    *,
    path: Path,
    origins: dict[tuple[str, ...], str] | None = None,
) -> Recipe:
    """Validate parsed recipe data; raises :class:`UsageError` with every problem found."""
    problems = _Problems(path, origins or {})
    for key in data:
        if key not in SECTIONS:
            problems.add(
                key,
                f"unknown section{did_you_mean(key, SECTIONS)} (sections: {', '.join(SECTIONS)})",
            )

    specs: dict[str, ComponentSpec | None] = {}
    for section in COMPONENT_SECTIONS:
        kind = section
        if section not in data:
            names = ", ".join(registry.names(kind))
            problems.add(
                "",
                f"missing section [{section}]: add one with name = one of {names} "
                f"(see `mlrun list {kind}`)",
            )
            specs[section] = None
            continue
        specs[section] = _component(data[section], kind, section, registry, problems)

    transforms: list[ComponentSpec] = []
    raw_transforms = data.get("transforms", [])
    if not isinstance(raw_transforms, list):
        problems.add(
            "transforms",
            "must be a list of tables: write each step as [[transforms]] with name = \"...\"",
        )
    else:
        for index, raw in enumerate(raw_transforms):
            spec = _component(raw, "transform", f"transforms.{index}", registry, problems)
            if spec is not None:
                transforms.append(spec)

    dataset = specs.get("dataset")
    channels = getattr(dataset.component, "channels", None) if dataset else None
    if channels is not None:
        for index, spec in enumerate(transforms):
            _check_channels(spec, f"transforms.{index}", dataset.component.name, channels, problems)  # type: ignore[union-attr]

    train = _train_settings(data.get("train", {}), problems)
    recipe_warnings: list[str] = []
    model, criterion = specs.get("model"), specs.get("criterion")
    if model and criterion and train and train.check_model_criterion:
        _check_pairing(model, criterion, registry, problems, recipe_warnings)
    if train is not None and train.device == "cuda":
        _check_cuda(problems)
    if train is not None and train.data_path == "memory" and specs.get("dataset"):
        blocker = memory_path_blocker(specs["dataset"].component, transforms)  # type: ignore[union-attr]
        if blocker:
            problems.add("train.data_path", f"'memory' is not possible: {blocker}; use \"auto\" or \"loader\"")

    if problems.lines:
        count = len(problems.lines)
        header = f"{path}: {count} problem{'s' if count > 1 else ''} found; nothing was run"
        raise UsageError(header, problems=problems.lines)
    assert train is not None and all(specs.values())
    return Recipe(
        path=path,
        dataset=specs["dataset"],  # type: ignore[arg-type]
        transforms=transforms,
        model=specs["model"],  # type: ignore[arg-type]
        criterion=specs["criterion"],  # type: ignore[arg-type]
        optimizer=specs["optimizer"],  # type: ignore[arg-type]
        train=train,
        warnings=recipe_warnings,
    )


def _component(
    raw: Any, kind: str, key: str, registry: Registry, problems: _Problems
) -> ComponentSpec | None:
    if not isinstance(raw, dict):
        example = "[[transforms]]" if kind == "transform" else f"[{key}]"
        problems.add(key, f"must be a table with a name, e.g. {example} name = \"...\"")
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
    if re.search(r"[.:/\\]", name):
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
    return ComponentSpec(entry, params)


def _check_channels(
    spec: ComponentSpec, key: str, dataset: str, channels: int, problems: _Problems
) -> None:
    for param in getattr(spec.component, "per_channel", ()):
        values = spec.params.get(param)
        if isinstance(values, (list, tuple)) and len(values) not in (1, channels):
            plural = "s" if channels != 1 else ""
            problems.add(
                f"{key}.{param}",
                f"{len(values)} values, but dataset '{dataset}' has {channels} channel{plural}: "
                f"give {channels} value{plural}" + ("" if channels == 1 else " or 1 for all"),
            )


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


def memory_path_blocker(dataset: Component, transforms: Sequence[ComponentSpec]) -> str | None:
    """Why the in-memory data path cannot serve these components, or None if it can."""
    if getattr(dataset, "tensors", None) is None:
        return f"dataset '{dataset.name}' does not provide in-memory tensors"
    for spec in transforms:
        if getattr(spec.component, "batch", None) is None:
            return f"transform '{spec.component.name}' has no batch version"
    return None


def _check_pairing(
    model: ComponentSpec,
    criterion: ComponentSpec,
    registry: Registry,
    problems: _Problems,
    recipe_warnings: list[str],
) -> None:
    """The classic rule: log_softmax goes with NLLLoss, raw logits with CrossEntropyLoss."""
    output = model.entry.component.output_kind(model.params)  # type: ignore[attr-defined]
    expects: tuple[str, ...] = criterion.entry.component.expects  # type: ignore[attr-defined]
    if output in expects:
        return
    if output == "log_probs" and "logits" in expects:
        recipe_warnings.append(
            f"model '{model.component.name}' already outputs log-probabilities, so criterion "
            f"'{criterion.component.name}' applies log_softmax twice: the loss is the same but the "
            "work is wasted; criterion 'nll' fits"
        )
        return
    fitting = [
        name
        for name in registry.names("criterion")
        if output in getattr(registry.get("criterion", name).component, "expects", ())
    ]
    fix = f"use criterion {' or '.join(repr(n) for n in fitting)}" if fitting else "choose another model"
    expected = " or ".join(OUTPUT_WORDS.get(e, e) for e in expects if e in OUTPUT_KINDS)
    problems.add(
        "criterion.name",
        f"'{criterion.component.name}' expects {expected}, but model "
        f"'{model.component.name}' outputs {OUTPUT_WORDS.get(output, output)}, which would "
        f"silently train badly; {fix} (or set train.check_model_criterion = false to train anyway)",
    )


def _check_cuda(problems: _Problems) -> None:
    import torch

    if not torch.cuda.is_available():
        problems.add(
            "train.device",
            "'cuda' was requested but no CUDA GPU is available here; use device = \"auto\" or \"cpu\"",
        )
