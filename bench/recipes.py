"""Re-measure the accuracy each recipe states in its header, by training it for real.

Every recipe in recipes/ opens with a line like ``Measured: test accuracy 0.9015 after
12 epochs``. This script trains each named recipe (all of them by default) with its
own settings, in its own process, and prints the stated and the measured accuracy side
by side with the epoch and CPU times. Runs are seeded, so on the same torch version and
thread count the measured figure repeats; it exits 1 if any recipe falls short of its
stated figure by more than --tolerance.

A recipe that trains on a folder of images (recipes/image_folder.toml) names in its header
the command that writes the folder it was measured on (`python -m mlrun.sample_folder
images`): that command is run first, in the run's temporary folder, and the recipe is
trained from there; the image cache it builds is removed afterwards.

    python bench/recipes.py                 # every recipe (about 15 minutes on 2 idle cores)
    python bench/recipes.py convnet mlp_tuned
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
STATED = re.compile(r"test accuracy (0\.\d+) after (\d+) epochs")
SAMPLE_FOLDER = re.compile(r"`python -m mlrun\.sample_folder ([^`]+)`")
#: The run log's line naming an image folder's cache file (mlrun.builtins.image_folder).
CACHE_LINE = re.compile(r"^\d+ images of .* \((?:L|RGB), \d+x\d+\): (.+\.bin)$", re.M)


def header(recipe: Path) -> str:
    """The recipe's leading comment, as one line."""
    lines = "".join(line for line in recipe.read_text().splitlines(keepends=True) if line.startswith("#"))
    return lines.replace("\n# ", " ")


def stated_figure(recipe: Path) -> tuple[float, int]:
    """The accuracy and epoch count the recipe's header comment states."""
    found = STATED.search(header(recipe))
    if found is None:
        sys.exit(f"{recipe}: its header states no 'test accuracy X after N epochs'")
    return float(found[1]), int(found[2])


def train(recipe: Path, epochs: int) -> dict[str, float]:
    """Train the recipe in a child process; its final accuracy, median epoch seconds and CPU seconds."""
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "runs"
        sample = SAMPLE_FOLDER.search(header(recipe))
        if sample is not None:  # the image folder it was measured on, written where the recipe looks (cwd)
            writer = [sys.executable, "-m", "mlrun.sample_folder", *sample[1].split()]
            subprocess.run(writer, cwd=work, check=True, capture_output=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        command = [sys.executable, "-m", "mlrun", str(recipe), f"train.epochs={epochs}", f"train.output_dir={out}"]
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=work)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        for cache in CACHE_LINE.findall(result.stdout):  # keyed by the temporary folder: never used again
            Path(cache).unlink(missing_ok=True)
        if result.returncode != 0:
            sys.exit(f"{recipe.name} failed:\n{result.stderr}")
        (run,) = out.iterdir()
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        # The reported test accuracy: the last epoch's, or (with a validation split) that of the selected weights.
        final = json.loads((run / "run.json").read_text())["final"]
    seconds = sorted(float(row["seconds"]) for row in rows)
    return {
        "accuracy": float(final["test_accuracy"]),
        "epoch_s": seconds[len(seconds) // 2],
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="recipe names (file stems); default: every recipe")
    parser.add_argument("--tolerance", type=float, default=0.002, help="accuracy a recipe may fall short by")
    args = parser.parse_args()
    recipes = [RECIPES / f"{name}.toml" for name in args.names] or sorted(RECIPES.glob("*.toml"))
    short = []
    print(f"{'recipe':24} {'epochs':>6} {'stated':>7} {'measured':>9} {'s/epoch':>8} {'CPU s':>7} {'wall s':>7}")
    for recipe in recipes:
        accuracy, epochs = stated_figure(recipe)
        got = train(recipe, epochs)
        print(f"{recipe.stem:24} {epochs:6} {accuracy:7.4f} {got['accuracy']:9.4f} {got['epoch_s']:8.1f} "
              f"{got['cpu_s']:7.0f} {got['wall_s']:7.0f}", flush=True)  # fmt: skip
        if got["accuracy"] < accuracy - args.tolerance:
            short.append(recipe.stem)
    if short:
        sys.exit(f"below their stated accuracy: {', '.join(short)}")


if __name__ == "__main__":
    main()
