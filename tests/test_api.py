"""The Python API (mlrun.train, check, resume_run, default_registry) and docs/api.md, run as written."""

from __future__ import annotations

import csv
import importlib
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mlrun
from mlrun import api
from mlrun.errors import MlrunError, UsageError

from conftest import QUIET, RECIPES, REPO, SMALL_RECIPE, write_recipe

DOC = REPO / "docs" / "api.md"
SYNTHETIC = ["dataset.name=synthetic", "dataset.size=200", "train.epochs=1"]


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file, in order."""
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_every_python_block_in_docs_api_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The page's blocks are one notebook session: run in order, sharing their names."""
    shutil.copytree(RECIPES, tmp_path / "recipes")  # run "from the repository root", writing runs/ here
    blocks = python_blocks(DOC)
    assert len(blocks) >= 4
    namespace: dict[str, object] = {"__name__": "__docs_api__"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{DOC}:block {number}", "exec"), namespace)  # noqa: S102 - our own docs
    printed = capsys.readouterr().out
    folder = namespace["result"].folder.path  # type: ignore[attr-defined]
    assert printed.startswith(f"{folder}\n") and folder.parent == Path("runs")
    assert "unknown parameter for optimizer 'adam'" in printed
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]  # trained 2, resumed to 3
    assert len(list((tmp_path / "runs").iterdir())) == 3  # and the two runs of the registry loop


def test_import_mlrun_stays_light_and_the_api_loads_on_first_use() -> None:
    code = (
        "import sys, mlrun\n"
        "assert 'torch' not in sys.modules and 'mlrun.api' not in sys.modules\n"
        "from mlrun import *\n"
        "assert callable(train) and callable(resume_run) and callable(default_registry)\n"
        "assert 'torch' not in sys.modules, 'the API must import torch only when called'\n"
        "print(sorted(n for n in mlrun.__all__ if n.islower() and not n.startswith('_')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['check', 'default_registry', 'hookimpl', 'hookspec', 'resume_run', 'train']"


def test_no_submodule_shadows_an_api_name() -> None:
    """Importing mlrun.X sets the attribute mlrun.X: a module named like an API function would hide it."""
    for info in pkgutil.walk_packages(mlrun.__path__, "mlrun."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    assert (mlrun.train, mlrun.check, mlrun.resume_run) == (api.train, api.check, api.resume)
    assert mlrun.default_registry is api.default_registry
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        mlrun.trian  # noqa: B018 - a typo is an AttributeError, not a lazy import


def test_train_writes_the_same_run_as_the_command(registry, small_recipe: Path, tmp_path: Path) -> None:
    from mlrun.cli import main

    lines: list[str] = []
    result = mlrun.train(small_recipe, ["train.epochs=1", "train.output_dir=api"], registry=registry,
                         echo=lines.append, progress=False)  # fmt: skip
    assert main([str(small_recipe), "train.epochs=1", "train.output_dir=cli"]) == 0
    (cli_folder,) = (tmp_path / "cli").iterdir()
    assert result.folder.path.parent == Path("api")
    assert lines[-1] == f"done: test_accuracy {result.final_accuracy:.4f}; weights and metrics in {result.folder.path}"
    (cli_row,) = csv.DictReader((cli_folder / "metrics.csv").open())
    for key in ("train_loss", "test_loss", "test_accuracy"):  # same seed, same numbers
        assert float(cli_row[key]) == result.metrics[0][key], key


def test_data_is_the_dataset_folder_made_absolute(registry, idx_root: Path, tmp_path: Path) -> None:
    recipe_path = write_recipe(tmp_path / "r.toml", SMALL_RECIPE.format(root="/nowhere"))
    shutil.copytree(idx_root, tmp_path / "data")
    recipe = mlrun.check(recipe_path, registry=registry, data="data")
    assert recipe.to_dict()["dataset"]["root"] == str(tmp_path / "data")
    result = mlrun.train(recipe_path, ["train.epochs=1"], registry=registry, data="data", **QUIET)
    assert 'root = "' + str(tmp_path / "data") + '"' in (result.folder.path / "recipe.toml").read_text()


def test_bad_input_raises_usage_error_and_writes_nothing(registry, tmp_path: Path) -> None:
    summary = RECIPES / "summary.toml"
    with pytest.raises(UsageError) as info:
        mlrun.train(summary, ["optimizer.lerning_rate=0.1", *SYNTHETIC], registry=registry, **QUIET)
    assert any("did you mean 'lr'" in problem for problem in info.value.problems)
    with pytest.raises(UsageError, match="overrides must be a list"):
        mlrun.train(summary, "train.epochs=1", registry=registry, **QUIET)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no such recipe file"):
        mlrun.check(tmp_path / "missing.toml", registry=registry)
    (tmp_path / "blocked").write_text("a file where the runs should go")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        mlrun.check(summary, ["train.output_dir=blocked"], registry=registry)
    with pytest.raises(UsageError, match="is not a run folder"):
        mlrun.resume_run(tmp_path, registry=registry, **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked"]  # no runs/, no data folder


def test_resume_refuses_a_change_without_force(registry, tmp_path: Path) -> None:
    first = mlrun.train(RECIPES / "summary.toml", SYNTHETIC, registry=registry, **QUIET)
    with pytest.raises(UsageError, match="refusing to resume"):
        mlrun.resume_run(first.folder.path, ["train.epochs=2"], registry=registry, **QUIET)
    more = mlrun.resume_run(first.folder.path, ["train.epochs=2"], force=True, registry=registry, **QUIET)
    assert [row["epoch"] for row in more.metrics] == [1, 2]
    assert isinstance(UsageError("x"), MlrunError)  # the documented catch-all


def test_default_registry_without_autoload_is_the_built_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLRUN_DISABLE_PLUGIN_AUTOLOAD")
    registry = mlrun.default_registry(autoload=False)
    assert {info.builtin for info in registry.plugins.infos.values()} == {True}
    assert "classifier" in registry.names("model")
