"""``mlrun export``: ONNX and TorchScript agree with the PyTorch model; the sidecar says what a deployment needs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from mlrun import engine, export, predict
from mlrun.builtins.datasets import FASHION_MNIST_CLASSES
from mlrun.cli import main
from mlrun.recipe import load_recipe

from conftest import QUIET, SMALL_RECIPE, write_recipe
from idx import write_dataset

#: The issue's bar: the exported model may differ from PyTorch's by at most this, on every output.
TOLERANCE = 1e-4
SAMPLES = 1000


@pytest.fixture(scope="module")
def run_dir(registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short run (logits output) on generated data whose test split has 1,000 samples."""
    base = tmp_path_factory.mktemp("export")
    root = write_dataset(base / "data", "FashionMNIST", train=600, test=SAMPLES)
    recipe_path = write_recipe(base / "small.toml", SMALL_RECIPE.format(root=root))
    # A model ending in a plain Linear layer: its logits have no softmax to hide differences in.
    overrides = ["train.epochs=1", "train.batch_size=100", "model.name=sequential", "criterion.name=cross_entropy",
                 f"train.output_dir={base / 'runs'}", "train.run_name=export"]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLRUN_OFFLINE", "1")
        return engine.run(load_recipe(recipe_path, registry, overrides), **QUIET).folder.path


def reference(registry, run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,000 test samples after the evaluation transforms, and the PyTorch model's outputs on them."""
    loaded = predict.load_run(run_dir, registry, "final")
    test_set = predict.test_split(loaded)
    inputs = torch.stack([test_set[i][0] for i in range(SAMPLES)])
    with torch.no_grad():
        return inputs, loaded.model.cpu()(inputs)


def check_sidecar(info: dict, fmt: str, file: Path) -> None:
    assert info["mlrun_export"] == 1 and info["format"] == fmt and info["file"] == file.name
    assert info["weights"] == "model.pt" and info["model"] == "sequential"
    assert info["input"] == {"name": "input", "shape": ["batch", 1, 28, 28], "dtype": "float32"}
    assert info["output"] == {
        "name": "output", "shape": ["batch", 10], "dtype": "float32", "kind": "logits",
        "probabilities": "softmax(output, axis=-1)",
    }  # fmt: skip
    assert info["classes"] == list(FASHION_MNIST_CLASSES)
    pre = info["preprocessing"]
    assert pre["image"] == {"mode": "L", "size": [28, 28]}  # a run without a recorded input: the MNIST default
    assert pre["mean"] == [0.5] and pre["std"] == [0.5] and pre["normalization_in_graph"] is False
    assert pre["resize"] is None and pre["center_crop"] is None
    assert [step["name"] for step in pre["steps"]] == ["to_tensor", "normalize"]
    assert pre["steps"][1]["params"] == {"mean": [0.5], "std": [0.5]}
    assert info["check"]["samples"] == 3 and 0 <= info["check"]["max_abs_diff"] <= TOLERANCE
    assert isinstance(info["mlrun_version"], str) and info["mlrun_version"]


@pytest.mark.slow
def test_onnx_agrees_with_pytorch_on_1000_test_samples(registry, run_dir: Path, capsys) -> None:
    import onnx
    import onnxruntime

    assert main(["export", str(run_dir), "--format", "onnx", "--weights", "final"]) == 0
    path = run_dir / "export" / "model.onnx"
    assert f"wrote {path}" in capsys.readouterr().out
    info = json.loads((run_dir / "export" / "model.onnx.json").read_text())
    check_sidecar(info, "onnx", path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert info["opset"] == opset >= 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch dimension is symbolic

    inputs, expected = reference(registry, run_dir)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": inputs.numpy()})[0])  # all 1,000 in one batch
    assert got.shape == expected.shape == (SAMPLES, 10)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert (got - expected).abs().max().item() <= TOLERANCE
    assert len(set(expected.argmax(1).tolist())) > 1  # a model that always says one class would prove little
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == ["model.onnx", "model.onnx.json"]  # no temp files


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_loads_with_torch_jit_and_agrees(registry, run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "deploy" / "fashion.pt"
    result = export.export(
        run_dir, fmt="torchscript", weights="final", out=out, registry=registry, echo=lambda line: None
    )
    assert result.path == out and result.sidecar == tmp_path / "deploy" / "fashion.pt.json"
    info = json.loads(result.sidecar.read_text())
    check_sidecar(info, "torchscript", out)
    assert info["opset"] is None and info == result.info

    inputs, expected = reference(registry, run_dir)
    scripted = torch.jit.load(str(out))
    with torch.no_grad():
        got = scripted(inputs)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert (got - expected).abs().max().item() <= TOLERANCE


def test_missing_onnx_extra_names_it_and_writes_nothing(run_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # importing it now raises ImportError
    before = sorted(p.name for p in run_dir.iterdir())
    assert main(["export", str(run_dir), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "needs the optional package 'onnxscript'" in err and "pip install 'torch-mlrun[onnx]'" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in run_dir.iterdir()) == before
    with pytest.raises(export.UsageError) as raised:
        export.require_onnx()
    assert "pip install 'torch-mlrun[onnx]'" in raised.value.render()


def test_bad_export_inputs_exit_2_and_write_nothing(run_dir: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "plain").mkdir()
    assert main(["export", str(tmp_path / "plain")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(SystemExit) as info:  # argparse refuses the unknown format
        main(["export", str(run_dir), "--format", "tflite"])
    assert info.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--format", "torchscript", "--weights", "best"]) == 2
    assert "best.pt not found" in capsys.readouterr().err  # this run kept no best epoch
    (tmp_path / "taken").mkdir()
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(tmp_path / "taken")]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert list((tmp_path / "taken").iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "plain",
        "taken",
    ]
    with pytest.raises(
        export.UsageError, match="--format must be one of onnx, torchscript, got 'onx' — did you mean 'onnx'"
    ):
        export.export(run_dir, fmt="onx", registry=None, echo=lambda line: None)  # type: ignore[arg-type]


def test_an_export_that_disagrees_with_pytorch_writes_nothing(
    registry, run_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    real = export._run_torchscript
    monkeypatch.setattr(export, "_run_torchscript", lambda data, batch: real(data, batch) + 1e-3)
    out = tmp_path / "model.pt"
    with pytest.raises(export.MlrunError, match="does not match the PyTorch model on 3 test samples"):
        export.export(run_dir, fmt="torchscript", weights="final", out=out, registry=registry, echo=lambda line: None)
    assert list(tmp_path.iterdir()) == []
