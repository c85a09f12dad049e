"""Sweep throughput: trials per hour with 1 and 2 workers, measured side by side in one run.

Both sweeps run the same grid (4 trials of ``recipes/summary_val.toml``: two learning
rates, two batch sizes, ``train.epochs`` from ``--epochs``) on the installed Fashion-MNIST,
one after the other, each into its own sweep folder in a temporary directory. A trial is
a whole ``mlrun run`` process (start-up, data, training, final test), so the figure is
what a user gets, not the training loop alone.

    python bench/sweep.py               # 2 epochs per trial (a few minutes on 2 idle cores)
    python bench/sweep.py --epochs 1

Printed: per worker count, the wall time, the trials done and the trials per hour; then
the speed-up of 2 workers over 1. With ``train.threads = "auto"`` (1 thread per trial),
2 workers use 2 cores: ``mlrun sweep`` refuses more workers than the cores allow.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "summary_val.toml"
GRID = ["optimizer.lr=0.01,0.003", "train.batch_size=64,128"]
TRIALS = 4


def sweep_seconds(workers: int, epochs: int, folder: Path) -> float:
    """Wall seconds of one 4-trial grid sweep with ``workers`` trials at a time."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "mlrun", "sweep", str(RECIPE), *GRID, f"train.epochs={epochs}"]
    command += ["train.patience=100", "--workers", str(workers), "--dir", str(folder)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"mlrun sweep --workers {workers} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> int:
    """Run both sweeps and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial (default 2)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlrun-bench-sweep-") as tmp:
        for workers in (1, 2):
            seconds = sweep_seconds(workers, args.epochs, Path(tmp) / f"workers{workers}")
            rows.append((workers, seconds, TRIALS / seconds * 3600))
    print(f"sweep of {TRIALS} trials ({RECIPE.name}, {args.epochs} epochs each), 1 thread per trial")
    print(f"{'WORKERS':<8}  {'WALL_S':>7}  {'TRIALS/HOUR':>11}")
    for workers, seconds, per_hour in rows:
        print(f"{workers:<8}  {seconds:>7.1f}  {per_hour:>11.1f}")
    print(f"2 workers: {rows[1][2] / rows[0][2]:.2f}x the trials per hour of 1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
