"""The ``[train]`` section of a recipe: how to train and where results go."""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from mlrun.params import format_value

#: Longest run name: a ``-YYYYmmdd-HHMMSS-N`` suffix follows, and file names stop at 255 bytes.
MAX_RUN_NAME = 100
RUN_NAME_RULE = (
    "a run name is one folder name inside train.output_dir: use letters, digits, '-', '_' "
    f"and '.', not starting with '.', at most {MAX_RUN_NAME} characters"
)

#: Intra-op CPU threads per process that ``train.threads = "auto"`` gives. Measured on a
#: 2-core machine (docs/performance.md): 2 threads are at best ~15 % faster on an idle
#: machine and 10-100x slower as soon as another process wants a core; 1 thread only
#: ever loses its share of the time.
AUTO_THREADS = 1


def resolve_threads(setting: int | str) -> int:
    """The intra-op thread count a ``train.threads`` setting asks for (``"auto"``: :data:`AUTO_THREADS`)."""
    return AUTO_THREADS if setting == "auto" else int(setting)


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
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' uses CUDA when available, else the CPU")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0: load in-process)")
    output_dir: str = Field("runs", description="folder that receives one run folder per run")
    run_name: str = Field("", description="run folder prefix; empty: the recipe's file name")
    check_model_criterion: bool = Field(True, description="refuse a criterion that does not fit the model's output")
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
    precision: Literal["32", "bf16", "16"] = Field(
        "32",
        description="'32': float32 (exact, the default); 'bf16': autocast to bfloat16 (CPU or GPU); "
        "'16': autocast to float16 with a gradient scaler (CUDA only)",
    )
    accumulate_steps: int = Field(
        1, ge=1, description="batches whose gradients add up to one optimizer step (a larger effective batch)"
    )
    clip_grad_norm: float = Field(
        0.0, ge=0, description="clip the global gradient norm to this before each step (0: no clipping)"
    )
    compile: bool = Field(
        False,
        description="torch.compile the model for training steps (a one-off compile of tens of seconds; "
        "pays for large models, not for small MLPs on a CPU: see docs/performance.md)",
    )
    flush_denormal: bool = Field(
        True, description="flush denormal floats to zero on the CPU (faster; changes tiny values)"
    )
    val_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="share of the training split held out for validation (stratified, seeded by train.seed); "
        "unset: no validation split, and every epoch is evaluated on the test split",
    )
    monitor: str | None = Field(
        None,
        description="the figure that selects the best epoch (best.pt), e.g. 'val.accuracy' or 'val.loss'; "
        "unset: no selection",
    )
    mode: Literal["auto", "max", "min"] = Field(
        "auto", description="'max' or 'min' for the monitored figure; 'auto': from the metric (min for a loss)"
    )
    patience: int | None = Field(
        None, ge=1, description="stop after this many epochs without improvement of train.monitor (early stopping)"
    )
    min_delta: float = Field(0.0, ge=0, description="the least change of train.monitor that counts as improvement")
    select_on_test: bool = Field(
        False,
        description="allow train.monitor / train.patience without a validation split: the test split then "
        "selects the model, and its figures are optimistic",
    )
    threads: Annotated[int, Ge(1)] | Literal["auto"] = Field(
        "auto",
        description=f"CPU threads per process for each tensor operation while training "
        f"(torch.set_num_threads; changes the last bits); 'auto': {AUTO_THREADS}, never slowed 10x by a busy machine",
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: object) -> object:
        # `precision = 16` and `train.precision=16` read as numbers; they mean the same as "16".
        if isinstance(value, int) and not isinstance(value, bool) and value in (16, 32):
            return str(value)
        return value

    @field_validator("threads", mode="before")
    @classmethod
    def _threads_is_a_count(cls, value: object) -> object:
        # One clear message instead of one per member of the union.
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise PydanticCustomError("threads", 'must be "auto" or a whole number of threads, 1 or more')

    @field_validator("run_name")
    @classmethod
    def _run_name_is_a_folder_name(cls, value: str) -> str:
        # Empty means "the recipe's file name", which run_name_from makes safe.
        problem = safe_run_name(value) if value else None
        if problem:
            raise PydanticCustomError("unsafe_run_name", "{problem}", {"problem": problem})
        return value


def train_reference() -> list[tuple[str, str, str, str]]:
    """``(key, type, default, meaning)`` for every ``[train]`` setting, for docs and help."""
    from typing import Annotated

    from mlrun.params import describe_type

    rows = []
    for name, info in TrainSettings.model_fields.items():
        # Annotated[t, m1, m2] spelled with a tuple: the metadata are only known here.
        parts = (info.annotation, *info.metadata)
        annotation = Annotated[parts] if info.metadata else info.annotation  # type: ignore[valid-type]
        rows.append((name, describe_type(annotation), format_value(info.default), info.description or ""))
    return rows
