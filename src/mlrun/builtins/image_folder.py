"""The built-in ``image_folder`` dataset: your own images, in torchvision's ``ImageFolder`` layout.

``ROOT/<class>/<image>``: the class names are the subfolder names, sorted. The test
split is another folder (``test_root``) or a seeded, stratified share of ``root``
(``test_fraction``); a validation split comes from ``train.val_fraction``.

Images are decoded once: the recipe's leading ``decode`` transforms (resize, center
crop, grayscale) are applied to each image a single time and the pixels cached
(:mod:`mlrun.image_cache`); the memory path trains on the cached pixels, applying the
remaining transforms per batch. On the loader path (``train.data_path = "loader"``)
every sample is decoded and transformed anew each time, as torchvision does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Gt, Le, Lt

from mlrun import Dataset, hookimpl
from mlrun.image_cache import Decoded, decode_once
from mlrun.images import ImageFiles, bad_image_error, folder, image_mode, open_image, scan

#: The most class names the run log lists.
SHOWN_CLASSES = 20


class ImageFolderData(torch.utils.data.Dataset):
    """One split of an image folder: ``(sample, label)`` items, and the cached pixels for the fast path.

    ``classes`` (label order), ``image_mode`` ("L" or "RGB": how images are loaded) and
    ``image_size`` (``[height, width]`` every image has before any transform, or None
    when the decode stage resizes them or they differ) describe the input; ``notes``
    are lines for the run log.
    """

    def __init__(
        self,
        files: ImageFiles,
        decoded: Decoded,
        rows: list[int],
        mode: str,
        decode: Callable[[Any], Any] | None,
        transform: Callable[[Any], Any] | None,
    ) -> None:
        self.classes = list(files.classes)
        self.image_mode = mode
        self.decoded, self.rows = decoded, rows
        self.paths = [files.paths[decoded.kept[row]] for row in rows]
        self.targets = [files.labels[decoded.kept[row]] for row in rows]
        self.decode, self.transform = decode, transform
        fixed = decoded.raw_size is not None and tuple(decoded.pixels.shape[1:3]) == decoded.raw_size
        self.image_size = list(decoded.raw_size) if fixed and decoded.raw_size else None
        self.notes: list[str] = []

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path = self.paths[index]
        try:
            image = open_image(path, self.image_mode)
        except ValueError as exc:  # changed since it was cached
            raise bad_image_error(path, str(exc)) from None
        if self.decode is not None:
            image = self.decode(image)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached pixels (after the decode stage) and the labels, for the in-memory fast path."""
        pixels = self.decoded.pixels
        if self.rows != list(range(len(pixels))):
            pixels = pixels.index_select(0, torch.as_tensor(self.rows, dtype=torch.long))
        return pixels, torch.as_tensor(self.targets, dtype=torch.long)


def _decoded(files: ImageFiles, mode: str, decode: Any, on_bad_image: str) -> Decoded:
    stage = decode if decode is not None else (lambda image: image)
    return decode_once(
        files.paths, mode=mode, stage=stage, stage_key=list(getattr(decode, "key", ())),
        on_bad_image=on_bad_image, name=str(files.root), what=str(files.root),
    )  # fmt: skip


def _stratified(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train, test)`` positions: a seeded share of each class for testing (at least one of two or more)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator).tolist()
    by_class: dict[int, list[int]] = {}
    for position in order:
        by_class.setdefault(labels[position], []).append(position)
    test: list[int] = []
    for members in by_class.values():
        count = int(len(members) * fraction + 0.5)
        count = min(max(count, 1 if len(members) > 1 else 0), len(members) - 1)
        test += members[:count]
    chosen = set(test)
    return [p for p in range(len(labels)) if p not in chosen], sorted(test)


def image_folder(
    *,
    train: bool,
    transform: Callable[[Any], Any] | None,
    decode: Callable[[Any], Any] | None = None,
    root: str,
    test_root: str | None = None,
    test_fraction: Annotated[float, Gt(0), Lt(1)] = 0.2,
    seed: Annotated[int, Ge(0), Le(2**32 - 1)] = 0,
    mode: Literal["auto", "RGB", "L"] = "auto",
    on_bad_image: Literal["error", "skip"] = "error",
) -> ImageFolderData:
    """Your own images, ROOT/<class>/<image>; the test split from test_root or a seeded share of root."""
    files = scan(folder(root), setting="dataset.root")
    loaded = image_mode(files.paths) if mode == "auto" else mode  # test_root's images load alike
    if not train and test_root is not None:
        files = scan(folder(test_root), setting="dataset.test_root", classes=files.classes)
    decoded = _decoded(files, loaded, decode, on_bad_image)
    if not decoded.kept:
        first = decoded.skipped[0]
        raise bad_image_error(
            Path(first[0]), f"{first[1]}; and none of the {len(files.paths)} images of {files.root} could be read"
        )
    rows = list(range(len(decoded.kept)))
    if test_root is None:
        labels = [files.labels[i] for i in decoded.kept]
        train_rows, test_rows = _stratified(labels, test_fraction, seed)
        rows = train_rows if train else test_rows
    data = ImageFolderData(files, decoded, rows, loaded, decode, transform)
    data.notes = _notes(data, files, decoded, train=train, own_folder=test_root is not None)
    return data


def _notes(data: ImageFolderData, files: ImageFiles, decoded: Decoded, *, train: bool, own_folder: bool) -> list[str]:
    """The run log's lines: the classes (training split); how each folder was decoded; what was skipped."""
    lines = []
    if train:
        shown = ", ".join(files.classes[:SHOWN_CLASSES]) + (", ..." if len(files.classes) > SHOWN_CLASSES else "")
        lines.append(f"classes ({len(files.classes)}): {shown}")
    if not (train or own_folder):
        return lines  # the test split of one folder: the training split reported the folder
    size = "x".join(map(str, decoded.pixels.shape[1:3]))
    how = "read from the cache" if decoded.seconds is None else f"decoded in {decoded.seconds:.1f} s"
    lines.append(f"{len(decoded.kept)} images of {files.root} {how} ({data.image_mode}, {size}): {decoded.path}")
    if decoded.skipped:
        first = decoded.skipped[0][0]
        lines.append(f"skipped {len(decoded.skipped)} unreadable image(s) of {files.root} (the first: {first})")
    return lines


def _tensors(dataset: ImageFolderData) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached pixels and labels of an image folder split (the memory path)."""
    return dataset.tensors()


@hookimpl
def register_datasets() -> list[Dataset]:
    """Image folders (ROOT/<class>/<image>), decoded once."""
    return [
        Dataset("image_folder", image_folder, "your own images in class subfolders, ROOT/<class>/<image> (decoded once, cached)", tensors=_tensors),
    ]  # fmt: skip
