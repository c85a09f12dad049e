"""Hostile inputs (issue #10) fail in validation or the pre-run probe: exit 2, a clear message, nothing written.

Run names that leave ``output_dir``, non-finite numbers, oversized seeds, devices,
deep nesting and dangling links as recipes, an output folder that is a file, a
dataset or transform that does not fit the model, and a decompression-bomb image.
"""

from __future__ import annotations

import os
import random
import resource
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Annotated

import numpy
import pytest
import torch
from pydantic import AllowInfNan

from mlrun import Model, build, engine, predict
from mlrun.cli import main
from mlrun.errors import UsageError
from mlrun.params import validate_params
from mlrun.recipe import load_recipe
from mlrun.recipe_file import MAX_NESTING
from mlrun.settings import run_name_from, safe_run_name

from conftest import RECIPES, run_cli, write_recipe

SUMMARY = str(RECIPES / "summary.toml")
#: `S` of the issue: the Summary recipe on generated data (no download), one epoch.
S = (SUMMARY, "dataset.name=synthetic", "train.epochs=1")


def fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI in-process; assert exit 2, no traceback, no run folder; return stderr."""
    assert main(list(args)) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.startswith("error: ")
    assert not Path("runs").exists()
    return captured.err


def quick_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI in a child with capped memory and time: a regression must fail the test, not the machine."""

    def cap() -> None:  # torch alone maps about 3 GiB of address space
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    return subprocess.run(
        [sys.executable, "-m", "mlrun", *args],
        capture_output=True, text=True, timeout=timeout, preexec_fn=cap,
    )  # fmt: skip


# 1. run names that leave output_dir or hide the run
RUN_NAMES = {
    "../../escaped": "contains a path separator ('/')",
    "/abs/path": "is an absolute path",
    ".": "is not a folder name",
    ".hidden": "starts with '.' (a hidden folder)",
    "a/b": "contains a path separator ('/')",
    "a\\b": "contains a path separator",
    '"x\\n"': "contains a control character (U+000A)",  # a TOML string holding a newline
    "a" * 300: "is 300 characters long",
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize(
    "name", list(RUN_NAMES), ids=["dotdot", "absolute", "dot", "hidden", "slash", "backslash", "newline", "long"]
)
def test_unsafe_run_name_is_refused(capsys, tmp_path: Path, command: str, name: str) -> None:
    # output_dir two levels down: '../../escaped' would land in tmp_path itself.
    err = fails(capsys, command, *S, "train.output_dir=out/runs", f"train.run_name={name}")
    assert "train.run_name: " in err
    assert RUN_NAMES[name] in err
    assert "use letters, digits, '-', '_' and '.', not starting with '.'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "something was written"


def test_safe_run_names_pass_and_recipe_stems_are_made_safe(registry, tmp_path: Path) -> None:
    for good in ("summary", "lr-0.003_b64", "v1.2", "x" * 100):
        assert safe_run_name(good) is None, good
    assert "absolute" in (safe_run_name("/etc") or "")
    assert run_name_from(Path("..toml")) == "run"
    assert run_name_from(Path("dir/.hidden.toml")) == "hidden"
    assert run_name_from(Path("my recipe.toml")) == "my_recipe"
    text = (RECIPES / "summary.toml").read_text()
    for file_name, expected in ((".hidden.toml", "hidden"), ("..toml", "run")):
        recipe = load_recipe(write_recipe(tmp_path / file_name, text), registry, ["dataset.name=synthetic"])
        assert recipe.run_name == expected
        assert safe_run_name(recipe.run_name) is None


# 2. non-finite numbers
@pytest.mark.parametrize(
    ("override", "key", "shown"),
    [
        ("optimizer.lr=inf", "optimizer.lr", "inf"),
        ("optimizer.lr=nan", "optimizer.lr", "nan"),
        ("optimizer.weight_decay=inf", "optimizer.weight_decay", "inf"),
        ("optimizer.eps=inf", "optimizer.eps", "inf"),
        ("transforms.1.mean=[inf]", "transforms.1.mean.0", "inf"),
        ("transforms.1.std=[-inf]", "transforms.1.std.0", "-inf"),
        ("optimizer.betas=[0.9, nan]", "optimizer.betas.1", "nan"),
    ],
)
def test_non_finite_numbers_are_refused(capsys, override: str, key: str, shown: str) -> None:
    err = fails(capsys, "check", *S, override)
    assert f"{key}: must be a finite number, got {shown}" in err


def test_a_parameter_can_allow_infinity() -> None:
    def clipped(limit: Annotated[float, AllowInfNan(True)] = float("inf"), scale: float = 1.0):
        """A factory whose limit may be infinite."""

    model = Model("clipped", clipped, "test model")
    values, problems = validate_params(model, {"limit": float("inf")})
    assert problems == [] and values["limit"] == float("inf")
    _, problems = validate_params(model, {"scale": float("inf")})
    assert problems == [("scale", "must be a finite number, got inf")]


# 3. seeds
def test_seed_must_fit_32_bits(capsys) -> None:
    err = fails(capsys, "check", *S, f"train.seed={2**63 - 1}")
    assert f"train.seed: must be less than or equal to {2**32 - 1}, got {2**63 - 1}" in err
    assert main(["check", *S, f"train.seed={2**32 - 1}"]) == 0


# 4. recipe files that are not recipes
def test_device_recipe_is_refused_at_once() -> None:
    started = time.perf_counter()
    result = quick_cli("check", "/dev/zero")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: /dev/zero: is not a regular file")
    assert time.perf_counter() - started < 60


def test_fifo_recipe_is_refused_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.toml")
    result = quick_cli("check", str(tmp_path / "pipe.toml"), timeout=60)
    assert result.returncode == 2
    assert "pipe.toml: is not a regular file" in result.stderr


def test_oversized_recipe_is_refused_before_reading(capsys, tmp_path: Path) -> None:
    path = tmp_path / "huge.toml"
    with path.open("wb") as out:
        out.truncate(2 << 20)  # sparse: no 2 MiB actually written
    assert f"{path}: is {2 << 20} bytes; a recipe is at most 1 MiB" in fails(capsys, "check", str(path))


def test_deeply_nested_recipe_names_the_file(capsys, tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "deep.toml", "a = " + "[" * 500 + "]" * 500 + "\n")
    assert f"error: {path}: nested too deeply" in fails(capsys, "check", str(path))
    # Below Python's recursion limit, but still deeper than any recipe: refused too.
    depth = MAX_NESTING + 1
    path = write_recipe(tmp_path / "deep2.toml", "a = " + "[" * depth + "1" + "]" * depth + "\n")
    assert f"error: {path}: nested too deeply" in fails(capsys, "check", str(path))


def test_deeply_nested_override_is_refused(capsys) -> None:
    err = fails(capsys, "check", *S, "train.x=" + "[" * 500 + "]" * 500)
    assert "override 'train.x=[[[" in err and "nested too deeply" in err
    err = fails(capsys, "check", *S, "train" + ".a" * 500 + "=1")
    assert "nested too deeply" in err


def test_broken_symlink_recipe(capsys, tmp_path: Path) -> None:
    (tmp_path / "summary.toml").write_text((RECIPES / "summary.toml").read_text())
    link = tmp_path / "summery.toml"
    link.symlink_to("gone.toml")
    err = fails(capsys, "check", str(link))
    assert f"{link}: broken symbolic link (points to gone.toml" in err
    assert "did you mean" not in err


def test_symlink_loop_recipe(capsys, tmp_path: Path) -> None:
    (tmp_path / "a.toml").symlink_to("b.toml")
    (tmp_path / "b.toml").symlink_to("a.toml")
    err = fails(capsys, "check", str(tmp_path / "a.toml"))
    assert f"{tmp_path / 'a.toml'}: symbolic link loop" in err
    assert "did you mean" not in err


# 5. an output folder that is a file
def test_output_dir_that_is_a_file(capsys, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    err = fails(capsys, "check", *S, "train.output_dir=afile")
    assert "output folder afile is a file, not a folder" in err
    assert "train.output_dir=DIR" in err
    err = fails(capsys, "run", *S, "train.output_dir=afile/runs")
    assert "output folder afile/runs is not writable: afile is a file, not a folder" in err


# 6. the pre-run probe
def test_more_classes_than_model_outputs_fails_before_training(tmp_path: Path) -> None:
    result = run_cli("run", *S, "dataset.num_classes=11", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "dataset 'synthetic' has 11 classes (labels 0..10) but model 'classifier' outputs 10 scores" in result.stderr
    assert "or set dataset.num_classes=10" in result.stderr
    assert "epoch 1/" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_model_num_classes_is_the_suggested_fix(capsys) -> None:
    err = fails(capsys, "run", *S, "dataset.num_classes=11", "model.name=mlp", "criterion.name=cross_entropy")
    assert "model 'mlp' outputs 10 scores" in err and "set model.num_classes=11" in err


CROP_RECIPE = """\
[dataset]
name = "synthetic"
size = 200

[[transforms]]
name = "random_crop"
size = {size}

[[transforms]]
name = "to_tensor"

[model]
name = "classifier"

[criterion]
name = "nll"

[optimizer]
name = "adam"

[train]
epochs = 1
"""


def test_oversized_random_crop_fails_before_training(capsys, tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "crop.toml", CROP_RECIPE.format(size=100000))
    err = fails(capsys, "run", str(path))
    assert "the transforms fail on a training sample of dataset 'synthetic'" in err
    assert "Required crop size (100000, 100000)" in err
    assert "epoch 1/" not in capsys.readouterr().out


def test_training_only_shape_misfit_fails_before_training(capsys, tmp_path: Path) -> None:
    # Test samples stay 28x28 (no random crop there): only a training sample shows the misfit.
    path = write_recipe(tmp_path / "crop.toml", CROP_RECIPE.format(size=20))
    err = fails(capsys, "run", str(path))
    assert "fail on a batch of dataset 'synthetic' (training split, inputs of shape [1, 1, 20, 20])" in err


def test_probe_gives_back_every_random_number(registry, tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "crop.toml", CROP_RECIPE.format(size=28))
    recipe = load_recipe(path, registry, ["transforms.0.padding=4"])
    built = build.build(recipe)
    before = (torch.get_rng_state(), random.getstate(), numpy.random.get_state()[1].copy())
    build.probe(recipe, built)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    assert (numpy.random.get_state()[1] == before[2]).all()
    assert built.model.training


# 7. decompression bombs
def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG with only its header: enough for PIL to report the size, no pixels to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_huge_image_is_refused_by_name(capsys, registry, tmp_path: Path) -> None:
    result = engine.run(
        load_recipe(SUMMARY, registry, ["dataset.name=synthetic", "dataset.size=100", "train.epochs=1"]),
        echo=lambda line: None, progress=False,
    )  # fmt: skip
    big = png_header(tmp_path / "big.png", 16000, 16000)  # over PIL's own bomb limit
    assert main(["predict", str(result.folder.path), str(big)]) == 2
    err = capsys.readouterr().err
    assert f"{big}: image too large to read (256 megapixels" in err and "Traceback" not in err
    assert not (result.folder.path / predict.PREDICTIONS_FOLDER).exists()
    # Under PIL's limit but over mlrun's: refused from the header, before decoding.
    with pytest.raises(UsageError, match=r"mid\.png: image too large to read \(9000x9000 pixels"):
        predict.load_image(png_header(tmp_path / "mid.png", 9000, 9000))
