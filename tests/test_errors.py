"""Every kind of bad input gets a clear error through the CLI: exit 2, no traceback, nothing written.

The cases follow the list in the "recipes that fail well" issue; each asserts the message content.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlrun.cli import main

from conftest import RECIPES, write_recipe

SUMMARY = str(RECIPES / "summary.toml")


def fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI in-process; assert exit 2, no traceback, no run folder; return stderr."""
    assert main(list(args)) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert not Path("runs").exists()
    assert captured.err.startswith("error: ")
    return captured.err


def recipe_with(tmp_path: Path, old: str, new: str) -> str:
    text = (RECIPES / "summary.toml").read_text()
    assert old in text
    return str(write_recipe(tmp_path / "edited.toml", text.replace(old, new)))


# 1. file missing / a directory / not UTF-8
def test_missing_file(capsys, tmp_path: Path) -> None:
    assert f"{tmp_path}/nope.toml: no such recipe file" in fails(capsys, "run", str(tmp_path / "nope.toml"))


def test_missing_suffix_suggests_the_file(capsys) -> None:
    assert "did you mean" in fails(capsys, "check", str(RECIPES / "summary"))


def test_misspelled_file_suggests_the_closest_recipe(capsys) -> None:
    err = fails(capsys, "check", str(RECIPES / "sumary.toml"))
    assert f"no such recipe file — did you mean {RECIPES}/summary.toml?" in err


def test_directory(capsys, tmp_path: Path) -> None:
    assert "is a directory" in fails(capsys, "run", str(tmp_path))


def test_not_utf8(capsys, tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[model]\nname = "caf\xe9"\n')
    assert f"{path}:2: not UTF-8 text (byte 0xe9)" in fails(capsys, "run", str(path))


# 2. TOML syntax error with line and column
def test_toml_syntax_error(capsys, tmp_path: Path) -> None:
    path = recipe_with(tmp_path, "lr = 0.01", "lr = 0.01 0.02")
    line = Path(path).read_text().splitlines().index("lr = 0.01 0.02") + 1
    assert f"{path}:{line}:11: TOML syntax error" in fails(capsys, "run", path)


# 3. unknown section or key
def test_unknown_section_and_key(capsys, tmp_path: Path) -> None:
    path = recipe_with(tmp_path, "[train]\nepochs = 5", "[trainer]\nx = 1\n[train]\nepoch = 5")
    err = fails(capsys, "run", path)
    assert "trainer: unknown section — did you mean 'train'?" in err
    assert "train.epoch: unknown setting — did you mean 'epochs'?" in err
    assert "2 problems found" in err


# 4. missing required section
def test_missing_section(capsys, tmp_path: Path) -> None:
    path = recipe_with(tmp_path, '[criterion]\nname = "nll"', "")
    err = fails(capsys, "run", path)
    assert "missing section [criterion]: add one with name = one of cross_entropy, nll, nll_probs" in err


# 5. unknown component name, in any kind
@pytest.mark.parametrize(
    ("override", "expected"),
    [("dataset.name=fashion", "unknown dataset 'fashion' — did you mean 'fashion_mnist'?"),
     ("transforms.0.name=totensor", "unknown transform 'totensor' — did you mean 'to_tensor'?"),
     ("model.name=clasifier", "unknown model 'clasifier' — did you mean 'classifier'? (run `mlrun list model` to see all"),
     ("criterion.name=nlll", "unknown criterion 'nlll' — did you mean 'nll'?"),
     ("optimizer.name=adamm", "unknown optimizer 'adamm' — did you mean 'adam'?")],
)  # fmt: skip
def test_unknown_component(capsys, override: str, expected: str) -> None:
    assert expected in fails(capsys, "run", SUMMARY, override)


# 6. unknown parameter
def test_unknown_parameter(capsys) -> None:
    err = fails(capsys, "run", SUMMARY, "optimizer.learning_rate=0.1")
    assert "optimizer.learning_rate: unknown parameter for optimizer 'adam' — did you mean 'lr'?" in err
    assert "(accepted: lr, betas, eps, weight_decay, fused, decay_bias_and_norm)" in err


# 7. wrong types, never coerced
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [("epochs = 5", 'epochs = "ten"', 'train.epochs: must be a valid integer, got "ten"'),
     ("lr = 0.01", 'lr = "0.01"', 'optimizer.lr: expected number (> 0), got "0.01" — write it without quotes: lr = 0.01'),
     ("mean = [0.5]", "mean = 0.5", "transforms.1.mean: expected list[number] (non-empty), got 0.5 — write it as a list: mean = [0.5]"),
     ("shuffle = true", 'shuffle = "yes"', 'train.shuffle: must be a valid boolean, got "yes"')],
)  # fmt: skip
def test_wrong_type(capsys, tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert expected in fails(capsys, "run", recipe_with(tmp_path, old, new))


# 8. out-of-range values
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [(["optimizer.lr=0"], "optimizer.lr: must be greater than 0, got 0"),
     (["optimizer.lr=-0.1"], "optimizer.lr: must be greater than 0, got -0.1"),
     (["train.epochs=0"], "train.epochs: must be greater than or equal to 1, got 0"),
     (["train.batch_size=0"], "train.batch_size: must be greater than or equal to 1, got 0"),
     (["model.name=mlp", "model.output=log_probs", "model.dropout=1.0"], "model.dropout: must be less than 1, got 1.0"),
     (["model.name=mlp", "model.output=log_probs", "model.dropout=-0.1"], "model.dropout: must be greater than or equal to 0, got -0.1"),
     (["transforms.1.std=[0.0]"], "transforms.1.std.0: must be greater than 0, got 0.0"),
     (["transforms.1.std=[0.5, 0.5]"], "transforms.1: mean has 1 values but std has 2"),
     (["transforms.1.mean=[0.5, 0.5, 0.5]", "transforms.1.std=[0.5, 0.5, 0.5]"],
      "transforms.1.mean: 3 values, but dataset 'fashion_mnist' has 1 channel: give 1 value")],
)  # fmt: skip
def test_out_of_range(capsys, overrides: list[str], expected: str) -> None:
    assert expected in fails(capsys, "run", SUMMARY, *overrides)


# 9. an import path where a component goes: rejected before any import
def test_import_path_is_never_imported(capsys, tmp_path: Path) -> None:
    sentinel = tmp_path / "evil_module_ran"
    (tmp_path / "evil_module.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n")
    err = fails(capsys, "run", SUMMARY, "model.name=evil_module.Net")
    assert "model.name: 'evil_module.Net' looks like an import path; recipes can only name registered components" in err
    assert not sentinel.exists()


# 10. model output <-> criterion mismatch
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [(["model.name=sequential"], "'nll' expects log-probabilities, but model 'sequential' outputs raw logits, which would silently train badly; use criterion 'cross_entropy'"),
     (["model.name=network_alternative"], "model 'network_alternative' outputs probabilities, which would silently train badly; use criterion 'nll_probs'"),
     (["model.name=network_alternative", "criterion.name=cross_entropy"], "'cross_entropy' expects raw logits, but model 'network_alternative' outputs probabilities")],
)  # fmt: skip
def test_model_criterion_mismatch(capsys, overrides: list[str], expected: str) -> None:
    err = fails(capsys, "run", SUMMARY, *overrides)
    assert expected in err and "train.check_model_criterion = false" in err


def test_log_probs_into_cross_entropy_only_warns(capsys) -> None:
    assert main(["check", SUMMARY, "criterion.name=cross_entropy"]) == 0
    assert "warning: model 'classifier' already outputs log-probabilities" in capsys.readouterr().err


# 11. override errors
@pytest.mark.parametrize(
    ("override", "expected"),
    [("optimizer.lr", "override 'optimizer.lr': expected key.path=value"),
     ("optimizer.lr=[0.1", "override 'optimizer.lr=[0.1': '[0.1' is not a TOML value"),
     ("optimzer.lr=0.1", "override 'optimzer.lr=0.1': optimzer: unknown section — did you mean 'optimizer'?"),
     ("transforms.7.mean=[0.1]", "override 'transforms.7.mean=[0.1]': transforms.7: index must be 0..1"),
     ("optimizer.lr.x=1", "override 'optimizer.lr.x=1': optimizer.lr is a value, not a table")],
)  # fmt: skip
def test_override_errors(capsys, override: str, expected: str) -> None:
    assert expected in fails(capsys, "run", SUMMARY, override)


# 12. cuda without a GPU
def test_cuda_without_gpu(capsys) -> None:
    import torch

    if torch.cuda.is_available():  # pragma: no cover - only on a GPU machine
        assert main(["check", SUMMARY, "train.device=cuda"]) == 0
        return
    assert "train.device: 'cuda' was requested but no CUDA GPU is available here" in fails(
        capsys, "run", SUMMARY, "train.device=cuda"
    )


# 13. data not found offline; data root not writable
def test_data_not_found_offline(capsys, tmp_path: Path) -> None:
    err = fails(capsys, "run", SUMMARY, "dataset.name=mnist", f"dataset.root={tmp_path / 'none'}")
    assert "MNIST not found. Tried:" in err and "download: not attempted (MLRUN_OFFLINE is set)" in err
    assert not (tmp_path / "none").exists()


def test_data_root_not_writable(capsys, tmp_path: Path, monkeypatch) -> None:
    import os

    if os.geteuid() == 0:  # root writes anywhere: use a path under a regular file instead
        blocker = tmp_path / "file"
        blocker.write_text("")
        root = blocker / "data"
    else:  # pragma: no cover
        root = Path("/proc/mlrun-data")
    monkeypatch.delenv("MLRUN_OFFLINE")
    err = fails(capsys, "run", SUMMARY, f"dataset.root={root}")
    assert f"cannot store Fashion-MNIST under {root}" in err and "--data DIR" in err


# 14. output folder not writable: found before training, by check too
def test_output_dir_not_writable(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    for command in ("check", "run"):
        err = fails(capsys, command, SUMMARY, f"train.output_dir={blocker / 'runs'}")
        assert f"output folder {blocker / 'runs'} is not writable" in err


def test_several_problems_are_reported_at_once(capsys) -> None:
    err = fails(capsys, "run", SUMMARY, "optimizer.lr=0", "train.epochs=0", "model.name=nope")
    assert "3 problems found; nothing was run" in err
