"""`mlrun new plugin` creates a package that installs, shows up in `mlrun list` and passes its test."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from mlrun.recipe_file import tomllib
from mlrun.scaffold import create_plugin

from conftest import REPO, pip_install_editable, run_cli


@pytest.mark.slow
def test_scaffold_installs_and_is_listed(tmp_path: Path, plugin_venv: Path) -> None:
    created = run_cli("new", "plugin", "mlrun-widget", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    package = tmp_path / "mlrun-widget"
    assert sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()) == [
        "README.md", "pyproject.toml", "recipes/example.toml", "src/mlrun_widget/__init__.py",
        "src/mlrun_widget/plugin.py", "tests/test_plugin.py",
    ]  # fmt: skip
    pip_install_editable(plugin_venv, package)
    env = {**os.environ, "MLRUN_PLUGINS": "mlrun_widget"}
    env.pop("MLRUN_DISABLE_PLUGIN_AUTOLOAD", None)
    listing = subprocess.run([str(plugin_venv), "-m", "mlrun", "list", "model"], env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert re.search(r"model\s+widget_mlp\s+mlrun-widget==0\.1\.0", listing.stdout), listing.stdout + listing.stderr
    check = subprocess.run([str(plugin_venv), "-m", "mlrun", "check", "recipes/example.toml"], cwd=package,
                           env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert check.returncode == 0, check.stderr
    tests = subprocess.run([str(plugin_venv), "-m", "pytest", "-v", "-p", "no:cacheprovider"], cwd=package,
                           env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert tests.returncode == 0 and "5 passed" in tests.stdout, tests.stdout + tests.stderr
    # the generated test runs mlrun's conformance kit on the example model
    assert "test_conformance[model:widget_mlp:output] PASSED" in tests.stdout, tests.stdout


def test_scaffold_depends_on_this_framework_not_the_other_mlrun(tmp_path: Path) -> None:
    package = create_plugin("mlrun-widget", tmp_path)
    dependencies = tomllib.loads((package / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~;\[ ]", requirement)[0].lower() for requirement in dependencies]
    assert "torch-mlrun" in names and "mlrun" not in names, dependencies
    readme = (package / "README.md").read_text()
    assert "torch-mlrun" in readme and "pypi.org/project/mlrun" not in readme


@pytest.mark.slow
def test_scaffold_resolves_to_this_framework_in_a_fresh_venv(tmp_path: Path, checkout_venv: Path) -> None:
    """`pip install --dry-run` against the configured index: torch-mlrun is the checkout, never the other mlrun."""
    package = create_plugin("mlrun-widget", tmp_path)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [str(checkout_venv), "-m", "pip", "install", "--dry-run", "--disable-pip-version-check",
         "--report", str(report), str(package)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (would,) = [line for line in result.stdout.splitlines() if line.startswith("Would install")]
    assert "mlrun-widget-0.1.0" in would.split()
    assert not re.search(r"(^|\s)mlrun-\d", would), would  # the other project (mlrun-1.x) is not pulled in
    installs = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "mlrun" not in installs and "torch-mlrun" not in installs, installs
    assert "Requirement already satisfied: torch-mlrun" in result.stdout
    # ... and the torch-mlrun that satisfied it is this checkout
    where = subprocess.run([str(checkout_venv), "-c", "import importlib.util as u; print(u.find_spec('mlrun').origin)"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert where.stdout.strip() == str(REPO / "src" / "mlrun" / "__init__.py"), where.stdout + where.stderr


def test_scaffold_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "mlrun-taken").mkdir()
    (tmp_path / "mlrun-taken" / "keep.txt").write_text("mine")
    result = run_cli("new", "plugin", "mlrun-taken", cwd=tmp_path)
    assert result.returncode == 2 and "already exists" in result.stderr
    assert [p.name for p in (tmp_path / "mlrun-taken").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("name", ["Bad Name", "9lives", "my--plugin", "class", "mlrun", "torch-mlrun", "über"])
def test_scaffold_rejects_invalid_names(tmp_path: Path, name: str) -> None:
    result = run_cli("new", "plugin", name, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
