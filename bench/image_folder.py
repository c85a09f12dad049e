"""Image-folder training: mlrun's decode-once cache against torchvision ``ImageFolder`` + ``DataLoader``.

Fashion-MNIST written out as PNG files (``ROOT/<class>/<n>.png``) is trained with the
same MLP (784-128-64-10), loss, optimizer, batch size and seed two ways, side by side
in one run:

- mlrun: the built-in ``image_folder`` dataset. The first run decodes every PNG once
  into its cache (the first epoch's cost); later epochs train on the cached pixels on
  the in-memory path.
- torchvision: ``ImageFolder`` + ``DataLoader(num_workers=os.cpu_count())``, decoding
  every PNG every epoch, as a torchvision user writes it.

Both evaluate on the test folder after every epoch; a row is seconds per epoch
(training + evaluation). Printed: the first epoch (with mlrun's cache building), the
median epoch from the second on, their ratio (goal: mlrun at least 5x faster) and the
final test accuracies (goal: within 1 point). Torch runs on one thread on both sides.

The folders are written by :mod:`mlrun.sample_folder` (the same images per class as
``python -m mlrun.sample_folder`` gives).

    python bench/image_folder.py                      # 2,000 train / 500 test images per class, 5 epochs
    python bench/image_folder.py --train 300 --test 100 --epochs 2   # a quick look
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mlrun.sample_folder import write_sample_folder

SEED = 0
BATCH = 64
LR = 1e-3


RECIPE = """\
[dataset]
name = "image_folder"
root = "{train}"
test_root = "{test}"
mode = "L"

[[transforms]]
name = "to_tensor"

[[transforms]]
name = "normalize"
mean = [0.5]
std = [0.5]

[[transforms]]
name = "flatten"

[model]
name = "mlp"
input_size = 784
hidden_sizes = [128, 64]
num_classes = 10

[criterion]
name = "cross_entropy"

[optimizer]
name = "adam"
lr = {lr}

[train]
epochs = {epochs}
batch_size = {batch}
seed = {seed}
threads = 1
output_dir = "{runs}"
"""


def run_mlrun(train: Path, test: Path, epochs: int, work: Path) -> dict:
    """Epoch times and final accuracy of mlrun (the first run of this folder: it builds the cache)."""
    import mlrun

    recipe = work / "image_folder.toml"
    text = RECIPE.format(train=train, test=test, lr=LR, epochs=epochs, batch=BATCH, seed=SEED, runs=work / "runs")
    recipe.write_text(text)
    lines: list[str] = []
    result = mlrun.train(recipe, registry=mlrun.default_registry(autoload=False), echo=lines.append, progress=False)
    decoded = [float(m.group(1)) for line in lines if (m := re.search(r"decoded in ([\d.]+) s", line))]
    seconds = [float(m["seconds"]) for m in result.metrics]
    return {"decode": sum(decoded), "epochs": seconds, "accuracy": result.final_accuracy}


def run_torchvision(train: Path, test: Path, epochs: int) -> dict:
    """Epoch times and final accuracy of ImageFolder + DataLoader with a worker per CPU."""
    from PIL import Image
    from torchvision import datasets, transforms

    from mlrun.builtins.models import mlp

    def gray(path: str) -> Image.Image:
        with open(path, "rb") as file:
            return Image.open(file).convert("L")

    pipeline = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5]), torch.flatten])
    train_set = datasets.ImageFolder(str(train), transform=pipeline, loader=gray)
    test_set = datasets.ImageFolder(str(test), transform=pipeline, loader=gray)
    workers = os.cpu_count() or 1
    generator = torch.Generator().manual_seed(SEED)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=BATCH, shuffle=True, num_workers=workers, generator=generator, persistent_workers=True
    )
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000, num_workers=workers, persistent_workers=True)
    torch.manual_seed(SEED)
    model = mlp(input_size=784, hidden_sizes=[128, 64], num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds, accuracy = [], 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for inputs, labels in train_loader:
            optimizer.zero_grad()
            loss_fn(model(inputs), labels).backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for inputs, labels in test_loader:
                correct += int((model(inputs).argmax(1) == labels).sum())
        accuracy = correct / len(test_set)
        seconds.append(time.perf_counter() - started)
    return {"epochs": seconds, "accuracy": accuracy}


def main() -> None:
    """Write the PNG folders, train both ways, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="training images per class written as PNG files")
    parser.add_argument("--test", type=int, default=500, help="test images per class written as PNG files")
    parser.add_argument("--epochs", type=int, default=5, help="epochs on each side (at least 2)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="mlrun-bench-images-") as scratch:
        work = Path(scratch)
        os.environ["MLRUN_DATA_DIR"] = str(work / "data")  # a fresh cache: the first epoch builds it
        system = "/usr/share/datasets/fashion-mnist"
        if Path(system).is_dir():  # Fashion-MNIST comes from the system copy into the fresh data folder
            os.environ.setdefault("MLRUN_OFFLINE", "1")
        started = time.perf_counter()
        train, test = work / "images" / "train", work / "images" / "test"
        written = sum(write_sample_folder(train, per_class=args.train).values())
        written_test = sum(write_sample_folder(test, per_class=args.test, split="test").values())
        print(f"wrote {written} + {written_test} PNG files in {time.perf_counter() - started:.1f} s", flush=True)
        ours = run_mlrun(train, test, args.epochs, work)
        theirs = run_torchvision(train, test, args.epochs)
    ours_later, theirs_later = statistics.median(ours["epochs"][1:]), statistics.median(theirs["epochs"][1:])
    workers = os.cpu_count()
    print(f"{'':48} {'first epoch':>12} {'epoch 2+ (median)':>18} {'test accuracy':>14}")
    first = ours["decode"] + ours["epochs"][0]
    print(
        f"{'mlrun image_folder (decode-once cache)':48} {first:>11.2f}s {ours_later:>17.3f}s {ours['accuracy']:>14.4f}"
        f"   (first epoch: {ours['decode']:.2f} s decoding into the cache + {ours['epochs'][0]:.2f} s)"
    )
    print(
        f"{f'torchvision ImageFolder + DataLoader({workers} workers)':48} {theirs['epochs'][0]:>11.2f}s "
        f"{theirs_later:>17.3f}s {theirs['accuracy']:>14.4f}"
    )
    ratio, gap = theirs_later / ours_later, abs(ours["accuracy"] - theirs["accuracy"]) * 100
    print(f"epoch 2+: mlrun {ratio:.1f}x faster (goal >= 5x); accuracy differs by {gap:.2f} points (goal <= 1)")
    sys.exit(0 if ratio >= 5 and gap <= 1 else 1)


if __name__ == "__main__":
    main()
