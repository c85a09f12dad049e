"""docs/own-data.md followed on real images, as a user pastes it: folder, check, train, predict, export.

Fashion-MNIST is written out as PNG files (100 per class, by the guide's own
``python -m mlrun.sample_folder`` command), three corrupt files are put among them, and
every command of the guide runs in a subprocess on that folder (fewer epochs): the
default ``on_bad_image = "error"`` names the first corrupt file, ``"skip"`` trains a
torchvision ResNet-18 and counts the skipped files, ``mlrun predict`` names the classes
of PNG files, ``mlrun export`` writes ONNX, and the guide's onnxruntime snippet agrees
with the PyTorch model. The guide's MLP recipe trains on the same folder. The run logs
are compared line by line with the guide's, numbers and paths masked.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlrun.cli import main
from mlrun.errors import UsageError
from mlrun.registry import Registry
from mlrun.sample_folder import class_folder_names, write_sample_folder
from mlrun.sample_folder import main as sample_folder_main

from conftest import REPO, require_real_fashion_mnist, run_cli

GUIDE = REPO / "docs" / "own-data.md"
DOC_RUN = "runs/image_folder-20261201-035237"  # the run folder the guide's examples name
PER_CLASS = 100
EPOCHS = "train.epochs=2"  # the recipe's one-epoch warmup needs a second epoch
CLASSES = class_folder_names(
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
)
#: The corrupt files put among the images: a truncated PNG, text named .jpg, an empty file.
CORRUPT = ("Bag/holiday.png", "Coat/notes.jpg", "Shirt/empty.png")


def blocks(lang: str) -> list[str]:
    """The guide's code blocks of one language ("" for plain output blocks)."""
    return [
        body
        for found, body in re.findall(r"^```(\w*)\n(.*?)^```$", GUIDE.read_text(), flags=re.S | re.M)
        if found == lang
    ]


def commands(prefix: str) -> list[str]:
    """The guide's shell lines starting with ``prefix``, comments stripped."""
    lines = [line.split("  #")[0].strip() for body in blocks("sh") for line in body.splitlines()]
    return [line for line in lines if line.startswith(prefix)]


def shape(line: str) -> str:
    """A log line with what differs from run to run masked: paths, numbers, the device."""
    line = re.sub(r"(?<![\w.])(/|runs/)\S+", "PATH", line)
    line = re.sub(r" on (cpu|cuda(:\d+)?|mps),", " on DEVICE,", line)
    line = line.replace("read from the cache", "decoded in N s")
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", line)


def collapsed(lines: list[str]) -> list[str]:
    shapes = [shape(line) for line in lines if line]
    return [s for i, s in enumerate(shapes) if i == 0 or s != shapes[i - 1]]


@dataclass
class Guide:
    """The guide followed in ``work``: the run refusing the corrupt files, the one skipping them, its folder."""

    work: Path
    env: dict[str, str]
    refused: subprocess.CompletedProcess[str] | None = None
    trained: subprocess.CompletedProcess[str] | None = None
    run: Path = Path()
    #: The guide's `mlrun predict` command, with 50 PNG files of Fashion-MNIST's test split added.
    predicted: subprocess.CompletedProcess[str] | None = None

    def cli(self, command: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """A guide command, run in ``work`` as written (the recipe from the checkout, the run folder ours)."""
        command = command.replace("recipes/", f"{REPO}/recipes/").replace(DOC_RUN, str(self.run))
        return run_cli(*shlex.split(command)[1:], *extra, env=self.env, cwd=self.work)


@pytest.fixture(scope="module")
def guide(tmp_path_factory: pytest.TempPathFactory) -> Guide:
    """The sample folder written with corrupt files among it; trained once refusing them, once skipping them."""
    require_real_fashion_mnist()
    work = tmp_path_factory.mktemp("own-data")
    env = {"MLRUN_DATA_DIR": str(work / "user-data"), "MLRUN_OFFLINE": "1", "MLRUN_DISABLE_PLUGIN_AUTOLOAD": "1"}
    (sample,) = commands("python -m mlrun.sample_folder")
    written = subprocess.run(
        [sys.executable, *shlex.split(sample)[1:], "--per-class", str(PER_CLASS)],
        capture_output=True, text=True, cwd=work, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    good = next((work / "images" / "Bag").iterdir()).read_bytes()
    (work / "images" / CORRUPT[0]).write_bytes(good[: len(good) // 2])
    (work / "images" / CORRUPT[1]).write_text("not an image\n")
    (work / "images" / CORRUPT[2]).write_bytes(b"")
    guide = Guide(work, env)
    (train,) = [c for c in commands("mlrun recipes/") if "on_bad_image" not in c]
    (skip,) = commands("mlrun recipes/image_folder.toml --data images dataset.on_bad_image=skip")
    guide.refused = guide.cli(train, EPOCHS)
    guide.trained = guide.cli(skip, EPOCHS)
    assert guide.trained.returncode == 0, guide.trained.stderr
    (guide.run,) = (work / "runs").iterdir()
    write_sample_folder(work / "unseen", split="test", per_class=5, data=env["MLRUN_DATA_DIR"])
    (predict,) = commands("mlrun predict ")
    guide.predicted = guide.cli(predict, *map(str, unseen_files(guide)))
    return guide


def unseen_files(guide: Guide) -> list[Path]:
    """PNG files the model never saw: 5 per class of Fashion-MNIST's test split."""
    return sorted((guide.work / "unseen").glob("*/*.png"))


def top_class(line: str) -> tuple[str, float]:
    """``(class, probability)`` from ``  1. Ankle boot  0.9944`` (mlrun predict) or ``file: Ankle boot 0.9944``."""
    name, probability = line.split(": ", 1)[-1].removeprefix("  1. ").rsplit(None, 1)
    return name.strip(), float(probability)


@pytest.mark.real_data
@pytest.mark.slow
def test_the_sample_folder_has_the_documented_layout(guide: Guide) -> None:
    folder = guide.work / "images"
    assert sorted(p.name for p in folder.iterdir()) == sorted(CLASSES)
    for name in CLASSES:
        pngs = sorted((folder / name).glob("*.png"))
        assert len(pngs) == PER_CLASS + (name in ("Bag", "Shirt"))
    with Image.open(folder / "Ankle boot" / "00011.png") as image:  # the guide's example files exist
        assert (image.mode, image.size) == ("L", (28, 28))
    assert (folder / "Bag" / "00035.png").is_file()


@pytest.mark.real_data
@pytest.mark.slow
def test_every_check_command_of_the_guide_passes(
    guide: Guide, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(guide.work)
    for command in commands("mlrun check "):
        args = shlex.split(command.replace("recipes/", f"{REPO}/recipes/"))[1:]
        assert main(args) == 0, command
        assert "OK. Fully resolved recipe" in capsys.readouterr().out


@pytest.mark.real_data
@pytest.mark.slow
def test_a_corrupt_image_is_refused_by_default_naming_it(guide: Guide) -> None:
    result = guide.refused
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {guide.work / 'images' / CORRUPT[0]}: not a readable image")
    (documented,) = [b for b in blocks("") if b.startswith("error: ")]
    assert collapsed(result.stderr.splitlines()) == collapsed(documented.splitlines())
    assert not (guide.work / "runs").exists() or len(list((guide.work / "runs").iterdir())) == 1  # the skip run's


@pytest.mark.real_data
@pytest.mark.slow
def test_skipping_corrupt_images_trains_resnet18_and_logs_as_documented(guide: Guide) -> None:
    printed = guide.trained.stdout.splitlines()
    (skipped,) = [line for line in printed if line.startswith("skipped ")]
    assert skipped.startswith(f"skipped 3 unreadable image(s) of {guide.work / 'images'} (the first: ")
    (documented_skip,) = [b for b in blocks("") if b.startswith("skipped ")]
    assert shape(skipped) == shape(documented_skip.strip())
    (documented,) = [b for b in blocks("") if b.startswith("training ")]
    assert collapsed([line for line in printed if line != skipped]) == collapsed(documented.splitlines())
    assert printed[0].startswith(f"training torchvision on image_folder ({PER_CLASS * 8} train / {PER_CLASS * 2} test")
    status = json.loads((guide.run / "run.json").read_text())
    assert status["classes"] == sorted(CLASSES) and status["input"] == {"mode": "RGB", "size": None}
    assert status["final"]["test_accuracy"] >= 0.4  # chance: 0.1


@pytest.mark.real_data
@pytest.mark.slow
def test_predict_names_the_classes_of_png_files(guide: Guide) -> None:
    (command,) = commands("mlrun predict ")
    documented = shlex.split(command)[3:]
    result = guide.predicted
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for file in documented:
        top = lines[lines.index(file) + 1]
        assert re.fullmatch(rf"  1\. ({'|'.join(map(re.escape, CLASSES))}) +\d\.\d{{4}}", top), top
    unseen = unseen_files(guide)
    assert len(list((guide.run / "predictions").glob("*.png"))) == len(documented) + len(unseen)
    # the files the model never saw: most are classified right (chance: 5 of 50)
    tops = [top_class(lines[lines.index(str(file)) + 1])[0] for file in unseen]
    assert len(tops) == 50 and sum(top == file.parent.name for top, file in zip(tops, unseen)) >= 20, tops


@pytest.mark.real_data
@pytest.mark.slow
def test_the_onnx_export_and_the_guides_onnxruntime_snippet_agree_with_the_model(
    guide: Guide, registry: Registry
) -> None:
    import onnxruntime

    from mlrun.predict import load_run

    (command,) = commands("mlrun export ")
    result = guide.cli(command)
    assert result.returncode == 0, result.stderr
    model_file = guide.run / "export" / "model.onnx"
    sidecar = json.loads(model_file.with_name("model.onnx.json").read_text())
    assert sidecar["classes"] == sorted(CLASSES) and sidecar["input"]["shape"] == ["batch", 3, 32, 32]
    (snippet,) = blocks("python")
    snippet = snippet.replace(f"{DOC_RUN}/export/model.onnx", str(model_file))
    ran = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=guide.work, check=False)
    assert ran.returncode == 0, ran.stderr
    # the snippet's top classes and probabilities are mlrun predict's
    predicted = guide.predicted.stdout.splitlines()
    assert len(ran.stdout.splitlines()) == 2
    for line in ran.stdout.splitlines():
        name, probability = top_class(line)
        expected_name, expected_probability = top_class(predicted[predicted.index(line.split(": ")[0]) + 1])
        assert name == expected_name and abs(probability - expected_probability) <= 2e-4, (line, predicted)
    # onnxruntime and the PyTorch model on 200 of the folder's PNGs, preprocessed by the snippet
    namespace: dict[str, object] = {"__name__": "snippet"}
    exec(snippet.split("session = ")[0], namespace)  # the imports, the sidecar and model_input()
    pngs = sorted((guide.work / "images").glob("*/0*.png"))[::5][:200]
    batch = np.stack([namespace["model_input"](p) for p in pngs])  # type: ignore[operator]
    got = onnxruntime.InferenceSession(str(model_file)).run(None, {"input": batch})[0]
    loaded = load_run(guide.run, registry, None)
    with torch.no_grad():
        expected = loaded.model.to("cpu").eval()(torch.from_numpy(batch)).numpy()
    assert np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.mark.real_data
@pytest.mark.slow
def test_the_guides_mlp_recipe_trains_on_the_same_folder(guide: Guide) -> None:
    (recipe,) = [b for b in blocks("toml") if 'name = "mlp"' in b]
    path = guide.work / "mlp.toml"
    path.write_text(recipe)
    result = run_cli(str(path), "dataset.on_bad_image=skip", "train.epochs=3", "train.output_dir=mlp-runs",
                     env=guide.env, cwd=guide.work)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(L, 28x28)" in result.stdout and "skipped 3 unreadable image(s)" in result.stdout
    (run,) = (guide.work / "mlp-runs").iterdir()
    assert json.loads((run / "run.json").read_text())["final"]["test_accuracy"] >= 0.6


def test_the_sample_folder_writes_the_datasets_pixels(idx_root: Path, tmp_path: Path) -> None:
    """On the small generated Fashion-MNIST: per_class images of each class, the dataset's own pixels."""
    from mlrun.datasets import fashion_mnist

    assert write_sample_folder(tmp_path / "images", per_class=3, data=str(idx_root)) == dict.fromkeys(CLASSES, 3)
    source = fashion_mnist(train=True, transform=None, root=str(idx_root))
    for name in CLASSES:
        pngs = sorted((tmp_path / "images" / name).iterdir())
        assert len(pngs) == 3
        for png in pngs:
            index = int(png.stem)
            assert CLASSES[int(source.targets[index])] == name
            assert np.array_equal(np.asarray(Image.open(png)), source.data[index].numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["images"]  # no temporary folder left


def test_the_sample_folder_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "mine.jpg").write_text("a user's file")
    with pytest.raises(UsageError, match="already exists and is not an empty folder"):
        write_sample_folder(tmp_path / "images", per_class=1)
    assert sample_folder_main([str(tmp_path / "images")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'images'}: already exists")
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["mine.jpg"]
