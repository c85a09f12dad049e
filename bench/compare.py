"""Side-by-side benchmark: the classic DataLoader loop, a hand-written tensor loop, and mlrun.

All three train the notes' Summary (Fashion-MNIST, 784-128-64-10 classifier with
log_softmax, NLLLoss, Adam lr 0.01, batch 64) for the same epochs with the same
seed, evaluating on the test split after every epoch. Each runs in its own
process, so start-up, time to first step and peak memory are measured honestly.

    python bench/compare.py            # 5 epochs, 3 rounds (about 4 minutes on 2 cores)
    python bench/compare.py --epochs 2 --rounds 1

Printed: seconds per epoch (training + evaluation, median over epochs), time from
process start to the first optimizer step, peak resident memory, final test
accuracy, the ratios classic/mlrun and mlrun/tensor, and the wall time of
`mlrun list` and `mlrun check` next to `python -c "import torch, torchvision"`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "summary.toml"
SEED = 0


# --------------------------------------------------------------------------- children


def _first_step_recorder() -> dict[str, float]:
    """Record the wall-clock time of the first optimizer step of any optimizer."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    seen: dict[str, float] = {}

    def hook(optimizer, args, kwargs) -> None:
        seen.setdefault("first_step", time.time())

    register_optimizer_step_post_hook(hook)
    return seen


def _report(epoch_seconds: list[float], accuracy: float, seen: dict[str, float], extra: dict | None = None) -> None:
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("RESULT " + json.dumps({
        "epoch_seconds": epoch_seconds, "accuracy": accuracy, "first_step": seen.get("first_step"),
        "peak_rss_mib": peak_kib / 1024, **(extra or {}),
    }))  # fmt: skip


def _fashion_mnist_root() -> str:
    from mlrun.builtins.datasets import FASHION_MNIST
    from mlrun.data import resolve_root

    return str(resolve_root(FASHION_MNIST, None, download=True))


class Classifier:  # built lazily so the parent process never imports torch
    @staticmethod
    def make():
        import torch.nn.functional as F
        from torch import nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.hidden1 = nn.Linear(784, 128)
                self.hidden2 = nn.Linear(128, 64)
                self.hidden3 = nn.Linear(64, 10)

            def forward(self, x):
                x = x.view(x.shape[0], -1)
                x = F.relu(self.hidden1(x))
                x = F.relu(self.hidden2(x))
                return F.log_softmax(self.hidden3(x), dim=1)

        return Net()


def child_classic(epochs: int) -> None:
    """The notes, as written: per-sample transforms through a shuffled DataLoader."""
    seen = _first_step_recorder()
    import torch
    from torchvision import datasets, transforms

    torch.manual_seed(SEED)
    root = _fashion_mnist_root()
    transform = transforms.Compose((transforms.ToTensor(), transforms.Normalize([0.5], [0.5])))
    trainset = datasets.FashionMNIST(root, download=False, train=True, transform=transform)
    testset = datasets.FashionMNIST(root, download=False, train=False, transform=transform)
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=64, shuffle=True)
    testloader = torch.utils.data.DataLoader(testset, batch_size=64)
    model = Classifier.make()
    criterion = torch.nn.NLLLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    seconds, accuracy = [], 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for images, labels in trainloader:
            logits = model(images)
            loss = criterion(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in testloader:
                correct += (model(images).argmax(1) == labels).sum().item()
        accuracy = correct / len(testset)
        seconds.append(time.perf_counter() - started)
    _report(seconds, accuracy, seen)


def child_tensor(epochs: int) -> None:
    """The best hand-written loop: one normalized tensor, index_select batches, fused Adam."""
    seen = _first_step_recorder()
    import torch
    from torchvision import datasets

    torch.manual_seed(SEED)
    torch.set_flush_denormal(True)
    root = _fashion_mnist_root()
    train = datasets.FashionMNIST(root, download=False, train=True)
    test = datasets.FashionMNIST(root, download=False, train=False)
    x_train = train.data.float().div_(255).sub_(0.5).div_(0.5).view(-1, 784)
    x_test = test.data.float().div_(255).sub_(0.5).div_(0.5).view(-1, 784)
    y_train, y_test = train.targets, test.targets
    model = Classifier.make()
    criterion = torch.nn.NLLLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
    generator = torch.Generator().manual_seed(SEED)
    seconds, accuracy = [], 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            loss = criterion(model(x_train.index_select(0, idx)), y_train.index_select(0, idx))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        seconds.append(time.perf_counter() - started)
    _report(seconds, accuracy, seen)


def child_mlrun(epochs: int) -> None:
    """mlrun on recipes/summary.toml, through its command line entry point."""
    seen = _first_step_recorder()
    import csv

    from mlrun.cli import main

    with tempfile.TemporaryDirectory() as out:
        code = main([str(RECIPE), f"train.epochs={epochs}", f"train.seed={SEED}", f"train.output_dir={out}"])
        if code != 0:
            sys.exit(code)
        (run,) = Path(out).iterdir()
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        status = json.loads((run / "run.json").read_text())
    _report([float(r["seconds"]) for r in rows], float(rows[-1]["test_accuracy"]), seen,
            {"data_path": status["data_path"]})  # fmt: skip


CHILDREN = {"classic": child_classic, "tensor": child_tensor, "mlrun": child_mlrun}


# --------------------------------------------------------------------------- parent


def measure(kind: str, epochs: int) -> dict:
    """Run one child process; return its report plus time-to-first-step from process start."""
    spawned = time.time()
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--epochs", str(epochs)],
        capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"{kind} failed:\n{result.stdout}\n{result.stderr}")
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    report = json.loads(line.removeprefix("RESULT "))
    report["first_step_s"] = report["first_step"] - spawned
    report["epoch_s"] = statistics.median(report["epoch_seconds"])
    report["best_epoch_s"] = min(report["epoch_seconds"])  # least disturbed by other load
    return report


def wall(command: list[str], repeats: int = 3) -> float:
    """Median wall time of a command."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="times to run each of (a) (b) (c), in turn")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        CHILDREN[args.child](args.epochs)
        return

    print(f"benchmark: {args.epochs} epochs each, batch 64, Adam lr 0.01, seed {SEED}; "
          f"{args.rounds} rounds of (a) (b) (c) in turn; {os.cpu_count()} CPUs; python {sys.version.split()[0]}")  # fmt: skip
    kinds = ("classic", "tensor", "mlrun")
    rounds = [{kind: measure(kind, args.epochs) for kind in kinds} for _ in range(args.rounds)]

    def median(kind: str, key: str) -> float:
        return statistics.median(r[kind][key] for r in rounds)

    def ratio(top: str, bottom: str, key: str) -> float:
        """Median of the per-round ratios: robust to the machine's speed drifting between rounds."""
        return statistics.median(r[top][key] / r[bottom][key] for r in rounds)

    path = rounds[0]["mlrun"]["data_path"]
    labels = {"classic": "(a) classic DataLoader loop", "tensor": "(b) hand-written tensor loop",
              "mlrun": f"(c) mlrun ({path} path)"}  # fmt: skip
    print(f"\n{'':32} {'s/epoch':>8} {'best':>6} {'first step':>11} {'peak RSS':>10} {'accuracy':>9}")
    for kind in kinds:
        print(f"{labels[kind]:32} {median(kind, 'epoch_s'):8.2f} {median(kind, 'best_epoch_s'):6.2f} "
              f"{median(kind, 'first_step_s'):10.2f}s {median(kind, 'peak_rss_mib'):7.0f} MiB "
              f"{median(kind, 'accuracy'):9.4f}")  # fmt: skip
    accuracy_gap = 100 * (median("mlrun", "accuracy") - median("classic", "accuracy"))
    print("\nratios: median over rounds of each round's ratio; 'best' compares each run's fastest epoch")
    print(f"speed-up (a)/(c): {ratio('classic', 'mlrun', 'epoch_s'):.2f}x, best {ratio('classic', 'mlrun', 'best_epoch_s'):.2f}x   (target >= 7)")
    print(f"overhead (c)/(b): {ratio('mlrun', 'tensor', 'epoch_s'):.2f}x, best {ratio('mlrun', 'tensor', 'best_epoch_s'):.2f}x   (target <= 1.1)")
    print(f"accuracy (c)-(a): {accuracy_gap:+.2f} points   (target within +/-1)")
    print(f"peak RSS (c)/(a): {ratio('mlrun', 'classic', 'peak_rss_mib'):.2f}   (target <= 1)")

    mlrun = [sys.executable, "-m", "mlrun"]
    print("\nstart-up (median of 3 runs, wall seconds):")
    print(f"  python -c 'import torch, torchvision'  {wall([sys.executable, '-c', 'import torch, torchvision']):.2f}")
    print(f"  mlrun list                              {wall([*mlrun, 'list']):.2f}")
    print(f"  mlrun check recipes/summary.toml        {wall([*mlrun, 'check', str(RECIPE)]):.2f}")


if __name__ == "__main__":
    main()
