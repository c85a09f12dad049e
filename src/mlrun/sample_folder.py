"""A sample image folder to try ``image_folder`` on: a built-in dataset written out as PNG files.

::

    python -m mlrun.sample_folder images                    # 500 Fashion-MNIST images per class in ./images
    python -m mlrun.sample_folder digits --dataset mnist --per-class 100

The folder has torchvision's ``ImageFolder`` layout, ``ROOT/<class>/<index>.png``: the
first ``per_class`` images of each class of the dataset's training split (``--split
test``: its test split), 28x28 grayscale, named by their index in the split; a class
folder is named after the class ('/' written as '-': ``T-shirt-top``). The data is found
as a recipe finds it (``--data DIR``, ``$MLRUN_DATA_DIR``, the system copy, torchvision's
download). The folder is written under a temporary name and renamed when complete, and
an existing folder that is not empty is refused: nothing is ever overwritten.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlrun.errors import MlrunError, UsageError
from mlrun.files import current_umask

DATASETS = ("fashion_mnist", "mnist")


def class_folder_names(names: Sequence[str]) -> list[str]:
    """Class names as folder names: '/' (as in Fashion-MNIST's 'T-shirt/top') becomes '-'."""
    return [name.replace("/", "-") for name in names]


def write_sample_folder(
    root: Path,
    *,
    dataset: str = "fashion_mnist",
    per_class: int = 500,
    split: str = "train",
    data: str | None = None,
) -> dict[str, int]:
    """Write ``per_class`` images of each class of ``dataset`` to ``root/<class>/<index>.png``; the count per class.

    Raises :class:`UsageError` when ``root`` exists and is not an empty folder.
    """
    from PIL import Image

    from mlrun.datasets import DIGIT_CLASSES, FASHION_MNIST_CLASSES, fashion_mnist, mnist, raw_tensors

    if dataset not in DATASETS:
        raise UsageError(f"--dataset: unknown dataset {dataset!r} (one of {', '.join(DATASETS)})")
    if per_class < 1:
        raise UsageError(f"--per-class: must be at least 1, got {per_class}")
    root = Path(root).expanduser().absolute()
    if root.exists() and not (root.is_dir() and not any(root.iterdir())):
        raise UsageError(
            f"{root}: already exists and is not an empty folder; nothing was written",
            problems=["name a new folder (it is created), or remove this one first"],
        )
    factory, names = (fashion_mnist, FASHION_MNIST_CLASSES) if dataset == "fashion_mnist" else (mnist, DIGIT_CLASSES)
    images, labels = raw_tensors(factory(train=split == "train", transform=None, root=data))
    folders = class_folder_names(names)
    counts = dict.fromkeys(folders, 0)
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        for name in folders:
            (partial / name).mkdir()
        for index, label in enumerate(labels.tolist()):
            name = folders[int(label)]
            if counts[name] < per_class:
                counts[name] += 1
                Image.fromarray(images[index].numpy()).save(partial / name / f"{index:05d}.png")
        os.chmod(partial, 0o777 & ~current_umask())  # mkdtemp makes 0700; the folder is the user's like any other
        if root.exists():
            root.rmdir()  # empty, checked above
        os.replace(partial, root)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(partial)
        raise
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlrun.sample_folder ROOT``: write the sample folder; 0 on success, 2 for bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m mlrun.sample_folder",
        description="Write a built-in dataset as an image folder, ROOT/<class>/<index>.png, to try image_folder on.",
    )
    parser.add_argument("root", help="the folder to create (must not exist, or be empty)")
    parser.add_argument("--dataset", choices=DATASETS, default="fashion_mnist")
    parser.add_argument("--per-class", type=int, default=500, help="images per class (default 500)")
    parser.add_argument("--split", choices=("train", "test"), default="train", help="the split to take them from")
    parser.add_argument("--data", metavar="DIR", help="where the dataset's files are (as mlrun RECIPE --data DIR)")
    args = parser.parse_args(argv)
    try:
        counts = write_sample_folder(
            Path(args.root), dataset=args.dataset, per_class=args.per_class, split=args.split, data=args.data
        )
    except MlrunError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    total = sum(counts.values())
    print(
        f"wrote {total} images of {len(counts)} classes to {Path(args.root).expanduser()} ({args.dataset}, {args.split} split)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
