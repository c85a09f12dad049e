"""What a run records about its data: the class names and the raw input, for ``run.json`` and the run log.

``run.json`` gains ``"classes"`` (names in label order) and ``"input"``: ``{"mode": "L"
or "RGB", "size": [height, width] or null}``, the image a sample is before any
transform (``size`` null when any size is accepted: the decode stage resizes).
``mlrun predict`` and ``mlrun export`` read them. A built dataset describes itself
with attributes ``classes``, ``image_mode`` and ``image_size`` (the built-in
``image_folder`` does); an MNIST-style dataset (uint8 ``N x H x W`` ``data``) is
grayscale of its ``H x W``. A built dataset's ``notes`` are printed in the run log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mlrun.components import Component


def classes(dataset: Component, built: Any) -> list[str]:
    """The class names in label order: the descriptor's, else the built dataset's ``classes``; [] when unknown."""
    named = getattr(dataset, "classes", ())
    if named:
        return list(named)
    found = getattr(built, "classes", None)
    if isinstance(found, Sequence) and not isinstance(found, str) and all(isinstance(c, str) for c in found):
        return list(found)
    return []


def raw_input(built: Any) -> dict[str, Any] | None:
    """``{"mode", "size"}`` of a raw sample before any transform, or None when the dataset does not say."""
    mode = getattr(built, "image_mode", None)
    if mode in ("L", "RGB"):
        size = getattr(built, "image_size", None)
        return {"mode": mode, "size": [int(s) for s in size] if size else None}
    inner = getattr(built, "dataset", None)  # a torch Subset of an MNIST-style dataset
    data = getattr(built, "data", None)
    if data is None and inner is not None:
        return raw_input(inner)
    if isinstance(data, torch.Tensor) and data.dtype == torch.uint8 and data.dim() == 3:
        return {"mode": "L", "size": [int(data.shape[1]), int(data.shape[2])]}
    return None


def status_fields(dataset: Component, built: Any) -> dict[str, Any]:
    """The ``run.json`` fields about the data, from the built training split."""
    return {"classes": classes(dataset, built), "input": raw_input(built)}


def notes(*datasets: Any) -> list[str]:
    """The run log's lines about the built datasets (each dataset's ``notes``), without repeats."""
    lines: list[str] = []
    for data in datasets:
        for line in getattr(data, "notes", None) or ():
            if isinstance(line, str) and line not in lines:
                lines.append(line)
    return lines
