"""Use a finished run: predict single images or test samples, and evaluate on the test split.

A run folder holds everything needed: ``recipe.toml`` (the resolved recipe, so the
same components, transforms and dataset are rebuilt) and ``model.pt`` (a
``state_dict``). Weights are only ever loaded with ``torch.load(...,
weights_only=True)``: a ``model.pt`` that needs arbitrary unpickling is refused,
never loaded unsafely, since unpickling can run any code the file's author chose.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mlrun.build import build_component, compose, select_device
from mlrun.checkpoint import load_weights_only
from mlrun.decode_stage import dataset_inputs
from mlrun.errors import UsageError
from mlrun.image_input import EvalPipeline, RunInput, open_image, picture_array, run_input
from mlrun.recipe import Recipe, load_recipe
from mlrun.registry import Registry
from mlrun.runs import BEST_WEIGHTS_FILE, RECIPE_FILE, WEIGHTS_FILE, RunFolder

Echo = Callable[[str], None]

#: Open an image file as a PIL image (by default 28x28 grayscale, as runs without a recorded input).
load_image = open_image
PREDICTIONS_FOLDER = "predictions"


@dataclass
class LoadedRun:
    """A finished run, ready to predict: its recipe and its trained model in eval mode."""

    run_dir: Path
    recipe: Recipe
    model: torch.nn.Module
    #: The dataset's declared class names; empty if the dataset does not name them.
    class_names: tuple[str, ...]
    #: What the model outputs: "logits", "log_probs" or "probs".
    output_kind: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: The weights file loaded: model.pt (the final weights) or best.pt (the best epoch's).
    weights: Path = Path(WEIGHTS_FILE)
    #: What a raw sample is (run.json's ``input``): how image files are opened.
    input: RunInput = field(default_factory=RunInput)

    def names_for(self, count: int) -> list[str]:
        """Names for ``count`` model outputs: the declared names, else "0", "1", ..."""
        return class_names_for(self.class_names, count)


@dataclass
class Prediction:
    """One predicted sample: where it came from, every class probability, the top classes."""

    source: str
    probabilities: list[float]
    #: (class index, class name, probability), most probable first.
    top: list[tuple[int, str, float]]
    #: The true label, for test-set samples.
    label: int | None = None
    png: Path | None = None


def class_names_for(declared: Sequence[str], count: int) -> list[str]:
    """The declared class names for ``count`` outputs, falling back to indices where none is declared."""
    return [declared[i] if i < len(declared) else str(i) for i in range(count)]


def _missing_weights_message(run_dir: Path, weights: Path) -> str:
    found = None
    with contextlib.suppress(UsageError):  # the status is only a hint here; the missing weights are the error
        found = RunFolder(run_dir).read_status().status
    status = f" (run.json says: {found})" if found else ""
    return f"{weights} not found: the run did not finish{status}; resume it or pick another run"


def load_weights(path: Path) -> dict[str, Any]:
    """Read a ``state_dict`` with ``weights_only=True``; every way it can fail is a :class:`UsageError`."""
    state = load_weights_only(path)
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UsageError(
            f"{path} is not a state_dict (found {type(state).__name__}); mlrun expects the model.pt its runs write"
        )
    return state


def weights_file(run_dir: Path, choice: str | None = None) -> Path:
    """The weights ``--weights`` picks: ``best`` (best.pt), ``final`` (model.pt), or None: best.pt when present."""
    best = run_dir / BEST_WEIGHTS_FILE
    if choice is None:
        return best if best.is_file() else run_dir / WEIGHTS_FILE
    if choice not in WEIGHTS_CHOICES:
        raise UsageError(f"--weights must be 'best' or 'final', got {choice!r}")
    if choice == "best" and not best.is_file():
        raise UsageError(
            f"{best} not found: this run selected no best epoch (it had no train.monitor), or it has not "
            "finished an epoch",
            problems=["use --weights final (model.pt), or train with train.monitor (see docs/recipes.md)"],
        )
    return best if choice == "best" else run_dir / WEIGHTS_FILE


#: What ``--weights`` accepts.
WEIGHTS_CHOICES = ("best", "final")


def load_run(run_dir: Path, registry: Registry, weights_choice: str | None = None) -> LoadedRun:
    """Rebuild a run's model from its recipe.toml and load its weights (weights only), in eval mode.

    ``weights_choice``: ``best`` (best.pt), ``final`` (model.pt), or None: best.pt when the run has one.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UsageError(f"{run_dir}: no such run folder; run folders are under train.output_dir (default: runs/)")
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: not a folder; give a run folder such as runs/summary-20261130-131159")
    recipe_path = run_dir / RECIPE_FILE
    if not recipe_path.is_file():
        raise UsageError(
            f"{recipe_path} not found: {run_dir} is not a run folder; "
            "give a folder that mlrun created under train.output_dir (default: runs/)"
        )
    weights = weights_file(run_dir, weights_choice)
    if not weights.is_file():
        raise UsageError(_missing_weights_message(run_dir, weights))
    recipe = load_recipe(recipe_path, registry)
    state = load_weights(weights)
    model = build_component(recipe.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UsageError(
            f"{weights} does not fit model '{recipe.model.component.name}' of {recipe_path}: "
            f"{str(exc).strip().splitlines()[0]}",
            problems=["the weights and the recipe come from different runs, or the model plugin changed"],
        ) from exc
    # The training's device when it is here; a run trained on a GPU still predicts on the CPU.
    device = select_device(recipe.train.device, cpu_fallback=True)
    model.to(device).eval()
    raw_input = run_input(run_dir)
    return LoadedRun(
        run_dir=run_dir,
        recipe=recipe,
        model=model,
        # The run's own class names (an image folder's come from its folders), else the dataset's declared ones.
        class_names=raw_input.classes or tuple(getattr(recipe.dataset.component, "classes", ()) or ()),
        output_kind=recipe.model.component.output_kind(recipe.model.params),  # type: ignore[attr-defined]
        device=device,
        weights=weights,
        input=raw_input,
    )


def probabilities(output: torch.Tensor, output_kind: str) -> torch.Tensor:
    """Class probabilities from a model output (classes on the last dimension)."""
    if output_kind == "logits":
        return torch.softmax(output, dim=-1)
    if output_kind == "log_probs":
        return output.exp()
    if output_kind == "probs":
        return output
    raise ValueError(f"unknown model output kind {output_kind!r}: expected logits, log_probs or probs")


def test_split(loaded: LoadedRun) -> Any:
    """Only the test split, with the recipe's evaluation transforms (no augmentation)."""
    recipe = loaded.recipe
    # A caching dataset (image_folder) gets the decode-stage transforms apart, as in training.
    return build_component(recipe.dataset, train=False, **dataset_inputs(recipe, compose, train=False))


def _as_input(sample: Any, source: str) -> torch.Tensor:
    if not isinstance(sample, torch.Tensor):
        raise UsageError(
            f"{source}: the recipe's transforms give a {type(sample).__name__}, not a tensor, "
            "so the model cannot take it; add a to_tensor transform to the recipe"
        )
    return sample


#: Up to this many classes, the picture shows a bar for every class; beyond, only the top ones.
PLOTTED_CLASSES = 10


def _plotted_classes(probs: torch.Tensor, top_k: int) -> list[int]:
    """Every class in order when there are few; else the most probable ones, best first."""
    if len(probs) <= max(PLOTTED_CLASSES, top_k):
        return list(range(len(probs)))
    return probs.topk(max(PLOTTED_CLASSES, top_k)).indices.tolist()


def _unique_png(out_dir: Path, stem: str, used: set[str]) -> Path:
    """``stem.png``, or ``stem-2.png`` ... when another sample of this call already took it."""
    name, count = f"{stem}.png", 1
    while name in used:
        count += 1
        name = f"{stem}-{count}.png"
    used.add(name)
    return out_dir / name


Sample = tuple[str, str, torch.Tensor, int | None, Any]


def _gather_samples(loaded: LoadedRun, images: Sequence[Path], indices: Sequence[int]) -> list[Sample]:
    """(source, file stem, model input, true label, picture the model saw) for each image file and test index."""
    samples: list[Sample] = []
    pipeline = EvalPipeline(loaded.recipe.transforms)
    for path in map(Path, images):
        sample, picture = pipeline(open_image(path, loaded.input.mode, loaded.input.size))
        samples.append((str(path), path.stem, _as_input(sample, str(path)), None, picture_array(picture)))
    if not indices:
        return samples
    test_set = test_split(loaded)
    size = len(test_set)
    name = loaded.recipe.dataset.component.name
    for index in indices:
        if not 0 <= index < size:
            valid = f"0..{size - 1}" if size else "none: it is empty"
            raise UsageError(
                f"index {index} is out of range: the test split of dataset '{name}' has {size} samples (valid: {valid})"
            )
        sample, label = test_set[index]
        inputs = _as_input(sample, f"index {index}")
        samples.append((f"test sample {index}", f"index-{index}", inputs, int(label), inputs))
    return samples


def _forward(loaded: LoadedRun, source: str, inputs: torch.Tensor) -> torch.Tensor:
    """The model's output for one sample; an input the model cannot take is a usage error naming it."""
    try:
        return loaded.model(inputs.unsqueeze(0).to(loaded.device))
    except RuntimeError as exc:
        raise UsageError(
            f"{source}: the model of {loaded.run_dir} cannot take this input (a tensor of shape "
            f"{list(inputs.shape)} after the run's evaluation transforms): {str(exc).strip().splitlines()[0]}",
            problems=["give an image of the size the run trained on, or train with a resize transform"],
        ) from exc


def predict(
    run_dir: Path,
    images: Sequence[Path] = (),
    indices: Sequence[int] = (),
    *,
    top_k: int = 3,
    out_dir: Path | None = None,
    registry: Registry,
    echo: Echo = print,
    weights: str | None = None,
) -> list[Prediction]:
    """Predict image files and test-set samples (by index); print the top classes, save one PNG each.

    ``weights``: ``best`` or ``final``; None takes best.pt when the run has one.
    """
    from mlrun import plots

    if not images and not indices:
        raise UsageError("nothing to predict: give image files and/or test-set indices (--index N)")
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    loaded = load_run(Path(run_dir), registry, weights)
    out_dir = Path(out_dir) if out_dir is not None else loaded.run_dir / PREDICTIONS_FOLDER

    # Validate every input before writing anything: a bad index or file fails the whole call.
    samples = _gather_samples(loaded, images, indices)
    with torch.no_grad():
        outputs = [_forward(loaded, source, inputs) for source, _, inputs, _, _ in samples]

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out_dir}: {exc.strerror or exc}; choose another output folder") from exc

    results: list[Prediction] = []
    used: set[str] = set()
    for (source, stem, _, label, picture), output in zip(samples, outputs):
        probs = probabilities(output, loaded.output_kind)[0].to("cpu", torch.float64)
        names = loaded.names_for(len(probs))
        k = min(top_k, len(probs))
        values, classes = probs.topk(k)
        top = [(int(c), names[int(c)], float(v)) for v, c in zip(values, classes)]
        png = _unique_png(out_dir, stem, used)
        truth = f" (true class: {names[label] if label < len(names) else label})" if label is not None else ""
        title = f"{source}{truth}: {top[0][1]} {top[0][2]:.1%}"
        shown = _plotted_classes(probs, top_k)
        plots.plot_prediction(picture, [float(probs[i]) for i in shown], [names[i] for i in shown], png, title=title)
        results.append(Prediction(source, probs.tolist(), top, label, png))
        echo(f"{source}{truth}")
        width = max(len(n) for _, n, _ in top)
        for rank, (_, class_name, value) in enumerate(top, start=1):
            echo(f"  {rank}. {class_name.ljust(width)}  {value:.4f}")
        echo(f"  -> {png}")
    return results
