"""Checkpoints: everything needed to continue a run exactly, loadable with ``weights_only=True``.

A checkpoint holds the model and optimizer state, the epoch and step counters,
the random number generator states (torch, Python, NumPy) and the data order
(the generator of epoch permutations, the current epoch's permutation and how far
into it training got). Only tensors and plain containers are stored, so
``torch.load(..., weights_only=True)`` reads it and nothing in it can run code.
"""

from __future__ import annotations

import hashlib
import pickle
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from mlrun.errors import UsageError
from mlrun.files import atomic_write

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
    name, keys, position, has_gauss, cached = numpy.random.get_state()  # type: ignore[misc]
    # As a tensor and plain numbers, so that weights_only loading accepts it.
    state["numpy"] = (name, torch.from_numpy(keys.astype("int64")), position, has_gauss, cached)  # type: ignore[attr-defined]
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


def load_weights_only(path: Path) -> Any:
    """``torch.load(path, weights_only=True)``; every way it can fail becomes a :class:`UsageError`.

    A file that needs arbitrary unpickling is refused, never loaded another way. The
    CRC-32 of every member of torch's zip container is verified first: torch itself does
    not check them, so a flipped byte would otherwise load as silently wrong weights.
    """
    _verify_checksums(path)
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it is about to refuse anyway.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise UsageError(
                f"refused to load {path}: it is not a plain weights file (it needs arbitrary "
                f"unpickling, which could run code: {_unpickling_reason(str(exc))}); "
                "mlrun loads weights only (weights_only=True)",
                problems=["use the files mlrun wrote for this run, or train the recipe again"],
            ) from exc
        raise UsageError(f"{path} is corrupt or truncated ({exc})") from exc
    except FileNotFoundError as exc:
        raise UsageError(f"{path} not found") from exc
    except OSError as exc:  # permissions, I/O errors: the file may be fine, reading it is not
        raise UsageError(f"cannot read {path} ({exc.strerror or exc})") from exc
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError, zipfile.BadZipFile) as exc:
        # A torn or foreign file fails inside torch's zip reader or pickle decoder with
        # a mix of exception types; all mean the same to the user.
        reason = str(exc).split(". ")[0].splitlines()[0][:200] if str(exc) else ""
        if not isinstance(exc, RuntimeError):  # "EOFError", "KeyError: '101'": bare text says too little
            reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        raise UsageError(
            f"{path} is corrupt or truncated ({reason})",
            problems=["train or resume the run again"],
        ) from exc


def _verify_checksums(path: Path) -> None:
    """Raise a :class:`UsageError` when a member of the file's zip container fails its CRC-32."""
    try:
        if not zipfile.is_zipfile(path):
            return  # torch's legacy format (no checksums): torch.load still loads it weights-only
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except FileNotFoundError:
        return  # reported by the loader, with its own message
    except OSError as exc:
        raise UsageError(f"cannot read {path} ({exc.strerror or exc})") from exc
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise UsageError(f"{path} is corrupt or truncated ({exc})", problems=["train or resume the run again"]) from exc
    if broken is not None:
        raise UsageError(
            f"{path} is corrupt: its checksum does not match ({broken} was altered after it was written)",
            problems=["train or resume the run again; a disk or copy error changed this file"],
        )


def _unpickling_reason(message: str) -> str:
    """The short reason inside torch's long weights-only refusal message."""
    found = re.search(r"WeightsUnpickler error:\s*(.+)", message)
    if not found:
        return "it holds objects other than tensors"
    # Only the first sentence: the rest tells how to allow-list the object, which mlrun won't.
    return found.group(1).strip().split(". ")[0].rstrip(".")


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; refuse anything else, clearly."""
    if not path.is_file():
        raise UsageError(
            f"{path} not found: this run has no checkpoint yet (it stopped before the first one)",
            problems=["start it again with `mlrun RECIPE`"],
        )
    data = load_weights_only(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{path} is not an mlrun checkpoint (format {FORMAT} expected)")
    return data


def weights_digest(model: torch.nn.Module) -> str:
    """A fingerprint of every weight, to prove all ranks ended with the same model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def split_digest(indices: torch.Tensor | None) -> str:
    """A fingerprint of the validation indices (empty without a validation split)."""
    if indices is None:
        return ""
    return hashlib.sha256(indices.to(torch.int64).numpy().tobytes()).hexdigest()
