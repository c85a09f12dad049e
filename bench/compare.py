"""Side-by-side benchmark: the classic DataLoader loop, a hand-written tensor loop, and mlrun.

All three train the notes' Summary (Fashion-MNIST, 784-128-64-10 classifier with
log_softmax, NLLLoss, Adam lr 0.01, batch 64) for the same epochs with the same
seed, evaluating on the test split after every epoch. Each runs in its own
process, so start-up, time to first step and peak memory are measured honestly.

    python bench/compare.py            # 5 epochs, 3 rounds; contention and features 2 rounds each (about 7 minutes on 2 idle cores)
    python bench/compare.py --epochs 2 --rounds 1 --contention-rounds 1

All three use the same number of intra-op threads: ``train.threads``' default
(``"auto"``), so the ratios compare the code, not the thread count.

Printed: seconds per epoch (training + evaluation, median over epochs), time from
process start to the first optimizer step, peak resident memory, final test
accuracy, the ratios classic/mlrun and mlrun/tensor; then the contention row:
mlrun's epoch time alone and beside a competing CPU-bound process, with the
default thread count and with 2 threads; the feature rows: the Summary recipe with a
cosine schedule and gradient clipping, with ``train.compile``, and with a validation split
and three metrics (``val+3 metrics``), against the plain recipe; and the wall time of `mlrun list` and
`mlrun check` next to `python -c "import torch, torchvision"`.
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
#: The competing process of the contention row: one CPU-bound Python loop.
BUSY_LOOP = "while True: pass"
#: A contention-row child that takes longer than this is stopped and shown as "> N"
#: (2 threads on a busy machine can take minutes; the bench should not).
CONTENTION_TIMEOUT_S = 40


# --------------------------------------------------------------------------- children


def _first_step_recorder() -> dict:
    """Record the wall-clock time of the first optimizer step, and the process's CPU time at every step.

    The CPU times (``time.process_time``) are kept per optimizer: the training optimizer
    is the one that steps most (a library may step a throw-away one while it starts).
    """
    from torch.optim.optimizer import register_optimizer_step_post_hook

    seen: dict = {"cpu": {}}

    def hook(optimizer, args, kwargs) -> None:
        seen.setdefault("first_step", time.time())
        seen["cpu"].setdefault(id(optimizer), []).append(time.process_time())

    register_optimizer_step_post_hook(hook)
    return seen


def _cpu_ms_per_step(seen: dict, steps_per_epoch: int = -(-60000 // 64)) -> float | None:
    """CPU milliseconds per training step, median over epochs; the gaps between epochs
    (evaluation, checkpoints) are left out. Unlike wall time, CPU time does not grow when
    other processes take turns on the cores, so it compares the loops' own work."""
    stamps = max(seen["cpu"].values(), key=len, default=[])
    epochs = [stamps[start : start + steps_per_epoch] for start in range(0, len(stamps), steps_per_epoch)]
    per_epoch = [(e[-1] - e[0]) / (len(e) - 1) * 1000 for e in epochs if len(e) > 1]
    return statistics.median(per_epoch) if per_epoch else None


def _report(
    epoch_seconds: list[float], accuracy: float, seen: dict, extra: dict | None = None, steps: int = -(-60000 // 64)
) -> None:
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("RESULT " + json.dumps({
        "epoch_seconds": epoch_seconds, "accuracy": accuracy, "first_step": seen.get("first_step"),
        "cpu_ms_per_step": _cpu_ms_per_step(seen, steps), "peak_rss_mib": peak_kib / 1024, **(extra or {}),
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


def child_classic(epochs: int, threads: str) -> None:
    """The notes, as written: per-sample transforms through a shuffled DataLoader."""
    seen = _first_step_recorder()
    import torch
    from torchvision import datasets, transforms

    torch.set_num_threads(int(threads))
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


def child_tensor(epochs: int, threads: str, variant: str = "plain") -> None:
    """The best hand-written loop: one normalized tensor, index_select batches, fused Adam.

    ``variant`` "cosine+clip" adds what the feature row adds to mlrun, written by hand:
    ``clip_grad_norm_`` before each step and a cosine schedule stepped after it.
    """
    seen = _first_step_recorder()
    import torch
    from torchvision import datasets

    torch.set_num_threads(int(threads))
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
    clip = variant == "cosine+clip"
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * -(-len(y_train) // 64))
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
            if clip:
                float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))  # the norm, as mlrun records it
            optimizer.step()
            if clip:
                schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        seconds.append(time.perf_counter() - started)
    _report(seconds, accuracy, seen)


#: The feature rows: recipes/summary.toml with these overrides, against the plain recipe.
VARIANTS: dict[str, list[str]] = {
    "plain": [],
    "cosine+clip": ["scheduler.name=cosine", "scheduler.warmup_epochs=1", "train.clip_grad_norm=1.0"],
    "compile": ["train.compile=true"],
    # Issue #14: a validation split (evaluated every epoch instead of the test split) and three metrics.
    "val+3 metrics": [
        "train.val_fraction=0.1",
        'metrics=[{name="accuracy"}, {name="macro_f1"}, {name="balanced_accuracy"}]',
    ],
    # Issue #15: the TensorBoard logger (scalars every 50 steps, each epoch's figures); target: <= 5 % over plain.
    "tensorboard": ['callbacks=[{name="tensorboard"}]'],
}


def child_mlrun(epochs: int, threads: str, variant: str = "plain") -> None:
    """mlrun on recipes/summary.toml, through its command line entry point ("default": its own thread policy)."""
    seen = _first_step_recorder()
    import csv

    from mlrun.cli import main

    overrides = [*VARIANTS[variant], *([] if threads == "default" else [f"train.threads={threads}"])]
    with tempfile.TemporaryDirectory() as out:
        code = main(
            [str(RECIPE), f"train.epochs={epochs}", f"train.seed={SEED}", f"train.output_dir={out}", *overrides]
        )
        if code != 0:
            sys.exit(code)
        (run,) = Path(out).iterdir()
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        status = json.loads((run / "run.json").read_text())
    # The reported test accuracy: the last epoch's, or (with a validation split) the final weights'.
    train_size = 54000 if any("val_fraction" in o for o in overrides) else 60000
    _report([float(r["seconds"]) for r in rows], float(status["final"]["test_accuracy"]), seen,
            {"data_path": status["data_path"], "threads": status.get("threads")}, -(-train_size // 64))  # fmt: skip


CHILDREN = {"classic": child_classic, "tensor": child_tensor, "mlrun": child_mlrun}


# --------------------------------------------------------------------------- parent


def measure(
    kind: str, epochs: int, threads: str, *, busy: bool = False, limit_s: float | None = None, variant: str = "plain"
) -> dict:
    """Run one child process; return its report plus time-to-first-step from process start.

    ``busy``: a CPU-bound loop competes for the cores while the child runs. ``limit_s``:
    a child that takes longer is stopped and reported as ``timed_out``.
    """
    competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if busy else None
    spawned = time.time()
    try:
        result = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--epochs", str(epochs), "--threads", threads,
             "--variant", variant],
            capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False,
            timeout=limit_s,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"timed_out": True, "epoch_s": float(limit_s or 0)}
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if result.returncode != 0:
        sys.exit(f"{kind} failed:\n{result.stdout}\n{result.stderr}")
    line = next(row for row in result.stdout.splitlines() if row.startswith("RESULT "))
    report = json.loads(line.removeprefix("RESULT "))
    report["first_step_s"] = report["first_step"] - spawned
    report["epoch_s"] = statistics.median(report["epoch_seconds"])
    report["best_epoch_s"] = min(report["epoch_seconds"])  # least disturbed by other load
    report["timed_out"] = False
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
    parser.add_argument("--rounds", type=int, default=3, help="times to run each of (a) (b) (c) (0: skip them)")
    parser.add_argument("--contention-rounds", type=int, default=2, help="rounds of the contention row (0: skip it)")
    parser.add_argument("--contention-epochs", type=int, default=1)
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--feature-rounds", type=int, default=2, help="rounds of the feature rows (0: skip them)")
    parser.add_argument("--feature-epochs", type=int, default=3, help="3: the median epoch is past compile's first")
    parser.add_argument("--threads", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, default="plain", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "mlrun":
        child_mlrun(args.epochs, args.threads, args.variant)
        return
    if args.child == "tensor":
        child_tensor(args.epochs, args.threads, args.variant)
        return
    if args.child:
        CHILDREN[args.child](args.epochs, args.threads)
        return

    if args.rounds > 0:
        compare_loops(args.epochs, args.rounds)
    if args.contention_rounds > 0:
        contention(args.contention_rounds, args.contention_epochs)
    if args.feature_rounds > 0:
        features(args.feature_rounds, args.feature_epochs)

    mlrun = [sys.executable, "-m", "mlrun"]
    print("\nstart-up (median of 3 runs, wall seconds):")
    print(f"  python -c 'import torch, torchvision'  {wall([sys.executable, '-c', 'import torch, torchvision']):.2f}")
    print(f"  mlrun list                              {wall([*mlrun, 'list']):.2f}")
    print(f"  mlrun check recipes/summary.toml        {wall([*mlrun, 'check', str(RECIPE)]):.2f}")


def compare_loops(epochs: int, rounds_wanted: int) -> None:
    """(a) (b) (c) in turn, each in its own process, for some rounds; (b) and (c) swap places every other round."""
    from mlrun.settings import resolve_threads  # no torch: the parent stays light

    threads = str(resolve_threads("auto"))  # what mlrun's default gives; (a) and (b) use it too
    print(f"benchmark: {epochs} epochs each, batch 64, Adam lr 0.01, seed {SEED}; "
          f"{rounds_wanted} rounds of (a) (b) (c) in turn; {threads} intra-op thread(s) each "
          f"(train.threads default); {os.cpu_count()} CPUs; python {sys.version.split()[0]}")  # fmt: skip
    kinds = ("classic", "tensor", "mlrun")
    rounds = []
    for number in range(rounds_wanted):
        order = kinds if number % 2 == 0 else ("classic", "mlrun", "tensor")
        rounds.append({kind: measure(kind, epochs, "default" if kind == "mlrun" else threads) for kind in order})

    def median(kind: str, key: str) -> float:
        return statistics.median(r[kind][key] for r in rounds)

    def ratio(top: str, bottom: str, key: str) -> float:
        """Median of the per-round ratios: robust to the machine's speed drifting between rounds."""
        return statistics.median(r[top][key] / r[bottom][key] for r in rounds)

    path, mlrun_threads = rounds[0]["mlrun"]["data_path"], rounds[0]["mlrun"]["threads"]
    labels = {"classic": "(a) classic DataLoader loop", "tensor": "(b) hand-written tensor loop",
              "mlrun": f"(c) mlrun ({path} path)"}  # fmt: skip
    print(f"\n{'':32} {'s/epoch':>8} {'best':>6} {'CPU ms/step':>12} {'first step':>11} {'peak RSS':>10} {'accuracy':>9}")  # fmt: skip
    for kind in kinds:
        print(f"{labels[kind]:32} {median(kind, 'epoch_s'):8.2f} {median(kind, 'best_epoch_s'):6.2f} "
              f"{median(kind, 'cpu_ms_per_step'):12.3f} "
              f"{median(kind, 'first_step_s'):10.2f}s {median(kind, 'peak_rss_mib'):7.0f} MiB "
              f"{median(kind, 'accuracy'):9.4f}")  # fmt: skip
    accuracy_gap = 100 * (median("mlrun", "accuracy") - median("classic", "accuracy"))
    print(
        f"\nmlrun trained with {mlrun_threads} thread(s) (run.json); ratios: median over rounds of each "
        "round's ratio; 'best' compares each run's fastest epoch"
    )
    print(
        f"speed-up (a)/(c): {ratio('classic', 'mlrun', 'epoch_s'):.2f}x, best {ratio('classic', 'mlrun', 'best_epoch_s'):.2f}x   (target >= 7)"
    )
    print(
        f"overhead (c)/(b): {ratio('mlrun', 'tensor', 'epoch_s'):.2f}x, best {ratio('mlrun', 'tensor', 'best_epoch_s'):.2f}x, "
        f"CPU per step {ratio('mlrun', 'tensor', 'cpu_ms_per_step'):.2f}x   (target <= 1.1)"
    )
    print(f"accuracy (c)-(a): {accuracy_gap:+.2f} points   (target within +/-1)")
    print(f"peak RSS (c)/(a): {ratio('mlrun', 'classic', 'peak_rss_mib'):.2f}   (target <= 1)")


def contention(rounds: int, epochs: int) -> None:
    """mlrun alone and beside a CPU-bound process, with its default thread count and with 2.

    Each round runs the four cases in turn (the order reversed every other round), so
    the ratios compare runs made minutes apart on the same machine.
    """
    settings = {"default": "default", "2": "2"}
    cases = [(name, busy) for busy in (False, True) for name in settings]
    results: list[dict[tuple[str, bool], dict]] = []
    for number in range(rounds):
        order = cases if number % 2 == 0 else cases[::-1]
        results.append({
            (name, busy): measure("mlrun", epochs, settings[name], busy=busy, limit_s=CONTENTION_TIMEOUT_S)
            for name, busy in order
        })  # fmt: skip

    def seconds(name: str, busy: bool) -> str:
        runs = [r[name, busy] for r in results]
        value = statistics.median(run["epoch_s"] for run in runs)
        return f"{'>' if any(run['timed_out'] for run in runs) else ''}{value:.2f}"

    def ratio(top: tuple[str, bool], bottom: tuple[str, bool]) -> str:
        capped = any(r[top]["timed_out"] or r[bottom]["timed_out"] for r in results)
        value = statistics.median(r[top]["epoch_s"] / r[bottom]["epoch_s"] for r in results)
        return f"{'>=' if capped else ''}{value:.1f}x"

    default_threads = next(r["default", False].get("threads") for r in results)
    print(
        f"\ncontention: mlrun s/epoch ({epochs} epoch{'s' if epochs != 1 else ''}) alone and beside one "
        f"CPU-bound process (python -c '{BUSY_LOOP}'); median of {rounds} rounds, ratios per round"
    )
    print(f"{'':32} {'alone':>8} {'contended':>10} {'contended/alone':>16}")
    for name, label in (("default", f"train.threads default ({default_threads})"), ("2", "train.threads = 2")):
        print(
            f"{label:32} {seconds(name, False):>8} {seconds(name, True):>10} {ratio((name, True), (name, False)):>16}"
        )
    print(
        f"2 threads / default: alone {ratio(('2', False), ('default', False))}, "
        f"contended {ratio(('2', True), ('default', True))}"
    )
    print("(target: the default's contended/alone far below 10x: a shared machine costs its share, not 10x)")


def features(rounds: int, epochs: int) -> None:
    """The Summary recipe plain, with a cosine schedule and gradient clipping, and compiled.

    Each round runs the variants in turn (order reversed every other round); ratios are
    per round, against the plain recipe run minutes apart on the same machine. The
    hand-written tensor loop runs plain and with the same schedule and clipping, so the
    cost of the feature itself is told apart from mlrun's.
    """
    from mlrun.settings import resolve_threads  # no torch: the parent stays light

    threads = str(resolve_threads("auto"))
    cases = [("mlrun", name) for name in VARIANTS] + [("tensor", "plain"), ("tensor", "cosine+clip")]
    results: list[dict[tuple[str, str], dict]] = []
    for number in range(rounds):
        order = cases if number % 2 == 0 else cases[::-1]
        results.append({
            (kind, name): measure(kind, epochs, "default" if kind == "mlrun" else threads, variant=name)
            for kind, name in order
        })  # fmt: skip

    def median(case: tuple[str, str], key: str) -> float:
        return statistics.median(r[case][key] for r in results)

    def ratio(case: tuple[str, str], key: str) -> float:
        return statistics.median(r[case][key] / r[case[0], "plain"][key] for r in results)

    print(f"\nfeatures: Summary, {epochs} epochs, median of {rounds} rounds; ratios per round vs the same loop plain")
    print(f"{'':34} {'s/epoch':>8} {'best':>6} {'CPU ms/step':>12} {'accuracy':>9} {'s/epoch':>8} {'CPU/step':>9}")
    for case in cases:
        label = f"{'(c) mlrun' if case[0] == 'mlrun' else '(b) tensor loop'} {case[1]}"
        print(f"{label:34} {median(case, 'epoch_s'):8.2f} {median(case, 'best_epoch_s'):6.2f} "
              f"{median(case, 'cpu_ms_per_step'):12.3f} {median(case, 'accuracy'):9.4f} "
              f"{ratio(case, 'epoch_s'):7.2f}x {ratio(case, 'cpu_ms_per_step'):8.2f}x")  # fmt: skip
    print("(cosine+clip: scheduler.name=cosine scheduler.warmup_epochs=1 train.clip_grad_norm=1.0 in mlrun, "
          "CosineAnnealingLR + clip_grad_norm_ by hand; target: mlrun's ratio within 1.1x of the tensor loop's; val+3 metrics within 1.1x of plain)")  # fmt: skip


if __name__ == "__main__":
    main()
