"""Checkpoints: everything needed to continue a run exactly, loadable with ``weights_only=True``.

A checkpoint holds the model and optimizer state, the epoch and step counters,
the random number generator states (torch, Python, NumPy) and the data order
(the generator of epoch permutations, the current epoch's permutation and how far
into it training got). Only tensors and plain containers are stored, so
``torch.load(..., weights_only=True)`` reads it and nothing in it can run code.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import torch

from mlrun.errors import UsageError
from mlrun.runs import atomic_write

FORMAT = 1
CHECKPOINT_FILE = "checkpoint.pt"


def capture_rng() -> dict[str, Any]:
    """The state of every random number generator training may draw from."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with torchvision
        return state
    name, keys, position, has_gauss, cached = numpy.random.get_state()
    # As a tensor and plain numbers, so that weights_only loading accepts it.
    state["numpy"] = (name, torch.from_numpy(keys.astype("int64")), position, has_gauss, cached)
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put every generator back to a :func:`capture_rng` state."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy

        name, keys, position, has_gauss, cached = state["numpy"]
        numpy.random.set_state((name, keys.numpy().astype("uint32"), position, has_gauss, cached))


def save(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write a checkpoint atomically: a crash at any moment leaves the previous one intact."""
    atomic_write(path, lambda out: torch.save({"format": FORMAT, **checkpoint}, out))


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; refuse anything else, clearly."""
    if not path.is_file():
        raise UsageError(
            f"{path} not found: this run has no checkpoint yet (it stopped before the first one)",
            problems=["start it again with `mlrun RECIPE`"],
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UsageError(
            f"refused to load {path}: it is not a plain checkpoint (it needs arbitrary "
            "unpickling, which could run code); mlrun loads checkpoints with weights_only=True",
            problems=[f"detail: {str(exc).splitlines()[0][:200]}"],
        ) from exc
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError) as exc:
        raise UsageError(
            f"{path} is corrupt or truncated ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            problems=["resume from another run, or start again with `mlrun RECIPE`"],
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{path} is not an mlrun checkpoint (format {FORMAT} expected)")
    return data
