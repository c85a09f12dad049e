"""Reading MNIST-style IDX files into tensors, checked before a byte is allocated.

An IDX file is a 4-byte magic number (two zero bytes, the element type, the number
of dimensions), one big-endian 32-bit size per dimension, then the data. A header
is checked against the file's size first, so a truncated file, a wrong shape or an
absurd count (0xFFFFFFFF: terabytes) is an error naming the file, not a crash or
an allocation that takes the machine down.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlrun.errors import UsageError


def idx_shape(path: Path, shape: Sequence[int | None] | None = None, *, what: str = "data") -> tuple[int, ...]:
    """The shape an unsigned-byte IDX file declares, checked against the file's size.

    ``shape`` is what the caller expects (None: any length along that axis); ``what``
    names the content in messages ("images", "labels"). Reads only the header.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(4)
        if len(head) < 4:
            raise _bad_idx(path, f"truncated IDX header ({size} bytes)")
        zero, kind, dims = struct.unpack(">HBB", head)
        if zero != 0 or kind != 0x08 or not 1 <= dims <= 3:
            raise _bad_idx(path, "not an unsigned-byte IDX file (bad magic number)")
        dim_bytes = handle.read(4 * dims)
    if len(dim_bytes) < 4 * dims:
        raise _bad_idx(path, f"truncated IDX header ({size} bytes)")
    found = struct.unpack(f">{dims}I", dim_bytes)
    if shape is not None and (
        len(shape) != dims or any(want is not None and want != got for want, got in zip(shape, found))
    ):
        wanted = " x ".join("N" if n is None else str(n) for n in shape)
        swapped = (what, dims) in (("images", 1), ("labels", 3))  # the other file of the pair
        raise _bad_idx(
            path, f"holds {dims}-d data of shape {' x '.join(map(str, found))}, expected {what} of shape {wanted}"
            + (f" (it looks like the {'labels' if dims == 1 else 'images'} file)" if swapped else ""),
            hint="are the images and labels files swapped or misnamed?" if swapped else "",
        )  # fmt: skip
    expected = 4 + 4 * dims + math.prod(found)
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise _bad_idx(
            path, f"{state}: the header declares {' x '.join(map(str, found))} bytes of data "
            f"({expected:,} bytes with the header), the file has {size:,}",
        )  # fmt: skip
    return found


def read_idx(path: Path, shape: Sequence[int | None] | None = None, *, what: str = "data") -> Any:
    """Read an uncompressed unsigned-byte IDX file (MNIST format) into a uint8 tensor.

    The header is checked against ``shape`` and the file size first (:func:`idx_shape`),
    so a bad file is an error naming it, never a huge allocation. The file is read
    straight into the tensor's memory: torchvision's reader holds the file twice while
    parsing (bytes, then a bytearray copy), which for the 47 MB Fashion-MNIST training
    images is the largest memory peak of a whole run.
    """
    import torch

    found = idx_shape(path, shape, what=what)
    data = torch.empty(found, dtype=torch.uint8)
    with open(path, "rb") as handle:
        handle.seek(4 + 4 * len(found))
        view = memoryview(data.numpy()).cast("B")  # type: ignore[arg-type]  # an ndarray is a buffer
        if handle.readinto(view) != len(view):  # the file shrank since it was checked
            raise _bad_idx(path, "truncated IDX file")
    return data


def read_split(
    image_file: Path, label_file: Path, *, num_classes: int, image_size: tuple[int, int] = (28, 28)
) -> tuple[Any, Any]:
    """Read one split's images (N x H x W) and labels (N) as uint8 tensors, every check first.

    Both headers are checked (shape, size, equal counts) before anything is allocated;
    then the labels are read and checked to be in ``0 .. num_classes-1``.
    """
    count = idx_shape(image_file, (None, *image_size), what="images")[0]
    labelled = idx_shape(label_file, (None,), what="labels")[0]
    if count != labelled:
        raise UsageError(
            f"{image_file} holds {count} images but {label_file} holds {labelled} labels",
            problems=["the two files must be the same split of the same dataset. To fix: replace "
                      "them with intact copies, or point `--data DIR` at a new or empty folder"],
        )  # fmt: skip
    labels = read_idx(label_file, (None,), what="labels")
    check_labels(labels, label_file, num_classes)
    return read_idx(image_file, (None, *image_size), what="images"), labels


def check_labels(labels: Any, path: Path, num_classes: int) -> None:
    """Raise a :class:`UsageError` naming ``path`` when a label is not in ``0 .. num_classes-1``."""
    if len(labels) and int(labels.max()) >= num_classes:
        index = int((labels >= num_classes).nonzero()[0])
        raise _bad_idx(
            path, f"label {int(labels[index])} at index {index} is out of range for "
            f"{num_classes} classes (0 to {num_classes - 1})",
        )  # fmt: skip


def _bad_idx(path: Path, message: str, hint: str = "") -> UsageError:
    return UsageError(
        f"{path}: {message}",
        problems=[
            *([hint] if hint else []),
            "To fix: replace the file with an intact copy, or point `--data DIR` at a new or empty "
            "folder to have the dataset put there",
        ],
    )
