"""Export a finished run's model for deployment: ONNX or TorchScript, with a sidecar JSON.

The exported graph takes the tensor the recipe's evaluation transforms produce (the
model's own input) with a dynamic batch dimension, and returns what the model returns.
Preprocessing (open as mode, resize, crop, to tensor, normalise) is *described* in the
sidecar rather than baked into the graph: resizing and cropping happen on images of any
size before there is a tensor, so a graph could never hold all of it, and the graph then
equals the PyTorch model exactly (checked at export on a batch of test samples).

The sidecar is ``<model file>.json``; the model file and sidecar are each written
atomically, and nothing is written when any step fails.
"""

from __future__ import annotations

import importlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import mlrun
from mlrun.errors import MlrunError, UsageError, did_you_mean
from mlrun.files import atomic_write, atomic_write_text
from mlrun.image_input import VALUE_ONLY, EvalPipeline
from mlrun.params import to_jsonable
from mlrun.predict import LoadedRun, load_run, test_split
from mlrun.registry import Registry

FORMATS = ("onnx", "torchscript")
#: The model file's name ends so, after the weights file's stem: export/model.onnx, export/best.torchscript.pt.
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
EXPORT_FOLDER = "export"
#: Version of the sidecar's layout.
SIDECAR_VERSION = 1
#: The optional packages ONNX export needs, and the extra that installs them.
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
ONNX_EXTRA = "torch-mlrun[onnx]"
#: How far the exported model may stray from the PyTorch model on the check batch.
TOLERANCE = 1e-4
#: How to get class probabilities from each kind of model output.
TO_PROBABILITIES = {
    "logits": "softmax(output, axis=-1)",
    "log_probs": "exp(output)",
    "probs": "output (already probabilities)",
}
INPUT_NAME, OUTPUT_NAME = "input", "output"

Echo = Callable[[str], None]


@dataclass
class Exported:
    """What an export wrote: the model file, its sidecar, and the sidecar's contents."""

    path: Path
    sidecar: Path
    info: dict[str, Any]


def require_onnx() -> None:
    """Raise a :class:`UsageError` naming the extra to install when an ONNX package is missing."""
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UsageError(
                f"--format onnx needs the optional package '{name}', which is not installed",
                problems=[f"install the ONNX extra: pip install '{ONNX_EXTRA}' (onnx, onnxscript, onnxruntime)"],
            ) from exc


def export(
    run_dir: Path,
    *,
    fmt: str = "onnx",
    weights: str | None = None,
    out: Path | None = None,
    registry: Registry,
    echo: Echo = print,
) -> Exported:
    """Export a run's model (``best``/``final`` weights as predict picks them) as ONNX or TorchScript."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}{did_you_mean(fmt, FORMATS)}")
    if fmt == "onnx":
        require_onnx()
    loaded = load_run(Path(run_dir), registry, weights)
    path = Path(out) if out is not None else loaded.run_dir / EXPORT_FOLDER / f"{loaded.weights.stem}{SUFFIXES[fmt]}"
    if path.is_dir():
        raise UsageError(f"--out {path}: is a folder; give a file name such as {path / ('model' + SUFFIXES[fmt])}")
    model = loaded.model.to("cpu").eval()
    example, check = _sample_batches(loaded)
    with torch.no_grad():
        expected = model(check)
    data, exporter, opset = (_onnx_bytes if fmt == "onnx" else _torchscript_bytes)(model, example)
    got = (_run_onnx if fmt == "onnx" else _run_torchscript)(data, check)
    diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
    if not diff <= TOLERANCE:
        raise MlrunError(
            f"the exported {fmt} model does not match the PyTorch model on {len(check)} test samples "
            f"(max abs difference {diff:.3g}, shapes {list(got.shape)} vs {list(expected.shape)}); nothing written",
            problems=["try the other --format, or report the model's architecture as an export bug"],
        )
    info = _sidecar(loaded, fmt, path, exporter, opset, check, expected)
    info["check"] = {"samples": len(check), "max_abs_diff": diff}
    sidecar = path.with_name(path.name + ".json")
    _write(path, data, sidecar, info)
    echo(f"wrote {path} ({fmt}, {exporter}; input {info['input']['shape']}, output {info['output']['kind']})")
    echo(f"wrote {sidecar} (preprocessing, class names, how to read the output)")
    echo(f"check: {len(check)} test samples, max abs difference to PyTorch {diff:.2e}")
    return Exported(path, sidecar, info)


def _sample_batches(loaded: LoadedRun) -> tuple[torch.Tensor, torch.Tensor]:
    """Test samples after the evaluation transforms: 2 to export with, 3 to check (another batch size)."""
    test_set = test_split(loaded)
    if len(test_set) == 0:
        raise UsageError(f"{loaded.run_dir}: the test split is empty; export needs one sample to trace the model")
    samples = [test_set[i % len(test_set)][0] for i in range(3)]
    if not all(isinstance(s, torch.Tensor) for s in samples):
        raise UsageError(
            f"{loaded.run_dir}: the recipe's transforms do not give tensors; add a to_tensor transform to the recipe"
        )
    batch = torch.stack(samples)
    return batch[:2], batch


def _onnx_bytes(model: torch.nn.Module, example: torch.Tensor) -> tuple[bytes, str, int | None]:
    """The model as ONNX (torch.export-based exporter, dynamic batch dimension): bytes, exporter, opset."""
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's advice is for PyTorch developers, not for users
            program = torch.onnx.export(
                model, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
            )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported with the model named
        raise MlrunError(
            f"torch.onnx could not export this model: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}",
            problems=["try --format torchscript, or run with --debug for the exporter's traceback"],
        ) from exc
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise MlrunError("torch.onnx returned no program")
    proto = program.model_proto
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return proto.SerializeToString(), f"torch.onnx (dynamo) {torch.__version__}", opset


def _torchscript_bytes(model: torch.nn.Module, example: torch.Tensor) -> tuple[bytes, str, int | None]:
    """The model traced to TorchScript (loads with torch.jit.load, no mlrun needed): bytes, exporter, no opset."""
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # deprecation notes on torch.jit are not the user's to act on
            traced = torch.jit.trace(model, example, check_trace=False)
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer)
    except Exception as exc:  # noqa: BLE001 - any tracer failure is reported with the model named
        raise MlrunError(
            f"torch.jit.trace could not trace this model: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}",
            problems=["try --format onnx, or run with --debug for the tracer's traceback"],
        ) from exc
    return buffer.getvalue(), f"torch.jit.trace {torch.__version__}", None


def _run_onnx(data: bytes, batch: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {INPUT_NAME: batch.numpy()})[0])


def _run_torchscript(data: bytes, batch: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.load(io.BytesIO(data))(batch)


def _sidecar(
    loaded: LoadedRun, fmt: str, path: Path, exporter: str, opset: int | None, check: torch.Tensor, out: torch.Tensor
) -> dict[str, Any]:
    """What a deployment needs: the tensors, the preprocessing, the class names, how to read the output."""
    dtype = str(check.dtype).removeprefix("torch.")
    return {
        "mlrun_export": SIDECAR_VERSION,
        "format": fmt,
        "file": path.name,
        "exporter": exporter,
        "opset": opset,
        "mlrun_version": mlrun.__version__,
        "run": str(loaded.run_dir),
        "weights": loaded.weights.name,
        "model": loaded.recipe.model.component.name,
        "input": {"name": INPUT_NAME, "shape": ["batch", *check.shape[1:]], "dtype": dtype},
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", *out.shape[1:]],
            "dtype": str(out.dtype).removeprefix("torch."),
            "kind": loaded.output_kind,
            "probabilities": TO_PROBABILITIES[loaded.output_kind],
        },
        "classes": loaded.names_for(out.shape[-1]) if out.dim() == 2 else list(loaded.class_names),
        "preprocessing": describe_preprocessing(loaded),
    }


def describe_preprocessing(loaded: LoadedRun) -> dict[str, Any]:
    """How to turn an image file into the model's input: open as mode/size, then the evaluation transforms."""
    pipeline = EvalPipeline(loaded.recipe.transforms)
    steps = [
        {"name": spec.component.name, "params": to_jsonable(spec.params), "summary": spec.component.summary}
        for spec in pipeline.specs
    ]
    normalize = next((built for name, built in pipeline.steps if name in VALUE_ONLY), None)
    mean, std = _mean_std(normalize) if normalize is not None else (None, None)
    params = {step["name"]: step["params"] for step in steps}
    return {
        "image": loaded.input.to_dict(),
        "resize": params.get("resize"),
        "center_crop": params.get("center_crop"),
        "mean": mean,
        "std": std,
        "normalization_in_graph": False,
        "steps": steps,
    }


def _mean_std(step: Callable[[Any], Any]) -> tuple[list[float] | None, list[float] | None]:
    """A normalisation step's per-channel mean and std, measured: it maps 0 to -mean/std and 1 to (1-mean)/std."""
    for channels in (3, 1):  # a preset refuses the wrong channel count; torchvision's Normalize broadcasts
        try:
            zero, one = (step(torch.full((channels, 1, 1), value)).flatten() for value in (0.0, 1.0))
        except (ValueError, RuntimeError):
            continue
        std = 1 / (one - zero)
        mean = -zero * std
        if channels == 3 and torch.allclose(mean, mean[0]) and torch.allclose(std, std[0]):
            mean, std = mean[:1], std[:1]  # one value for every channel, as the recipe wrote it
        return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]
    return None, None


def _write(path: Path, data: bytes, sidecar: Path, info: dict[str, Any]) -> None:
    """The model file then its sidecar, each atomically; a failed sidecar takes the new model file away."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {path.parent}: {exc.strerror or exc}; choose another --out") from exc
    atomic_write(path, lambda handle: handle.write(data))
    try:
        atomic_write_text(sidecar, json.dumps(info, indent=2) + "\n")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
