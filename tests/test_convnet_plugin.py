"""The example plugin package (plugins/mlrun-convnet), as installed by `make test`.

These tests check the installed distribution through its entry point, the way a user gets it.
"""

from __future__ import annotations

import csv
import re
from importlib import metadata
from pathlib import Path

import pytest

from conftest import RECIPES, run_cli

CONVNET = str(RECIPES / "convnet.toml")
ONLY_CONVNET = {"MLRUN_DISABLE_PLUGIN_AUTOLOAD": "", "MLRUN_PLUGINS": "convnet"}


@pytest.fixture(autouse=True)
def installed() -> None:
    try:
        metadata.distribution("mlrun-convnet")
    except metadata.PackageNotFoundError:
        pytest.fail("mlrun-convnet is not installed: `make test` installs plugins/* into .venv")


def test_list_shows_its_components_with_distribution_and_version() -> None:
    result = run_cli("list", env=ONLY_CONVNET)
    assert result.returncode == 0, result.stderr
    assert re.search(r"model\s+small_cnn\s+mlrun-convnet==0\.1\.0", result.stdout)
    assert re.search(r"criterion\s+focal\s+mlrun-convnet==0\.1\.0", result.stdout)
    assert re.search(r"model\s+classifier\s+built-in", result.stdout)  # side by side


def test_plugins_shows_it_next_to_the_builtins() -> None:
    result = run_cli("plugins", env=ONLY_CONVNET)
    line = next(l for l in result.stdout.splitlines() if l.startswith("convnet "))
    assert line.split()[:2] == ["convnet", "mlrun-convnet==0.1.0"] and line.endswith("ok")


@pytest.mark.slow
def test_its_recipe_trains(idx_root: Path, tmp_path: Path) -> None:
    # two epochs: the recipe warms up for one, and a warmup as long as the run is refused
    result = run_cli(CONVNET, f"--data={idx_root}", "train.epochs=2", env=ONLY_CONVNET, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert float(rows[0]["test_accuracy"]) > 0.5
    assert '"mlrun-convnet": "0.1.0"' in (folder / "run.json").read_text()  # plugin version recorded


@pytest.mark.slow
def test_disabled_plugin_components_are_gone() -> None:
    env = {"MLRUN_DISABLE_PLUGIN_AUTOLOAD": "1"}
    assert "small_cnn" not in run_cli("list", env=env).stdout
    check = run_cli("check", CONVNET, env=env)
    assert check.returncode == 2 and "unknown model 'small_cnn'" in check.stderr
