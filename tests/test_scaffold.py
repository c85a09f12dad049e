"""`mlrun new plugin` creates a package that installs, shows up in `mlrun list` and passes its test."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import pip_install_editable, run_cli


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
    tests = subprocess.run([str(plugin_venv), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package,
                           env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert tests.returncode == 0 and "2 passed" in tests.stdout, tests.stdout + tests.stderr


def test_scaffold_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "mlrun-taken").mkdir()
    (tmp_path / "mlrun-taken" / "keep.txt").write_text("mine")
    result = run_cli("new", "plugin", "mlrun-taken", cwd=tmp_path)
    assert result.returncode == 2 and "already exists" in result.stderr
    assert [p.name for p in (tmp_path / "mlrun-taken").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("name", ["Bad Name", "9lives", "my--plugin", "class", "mlrun", "über"])
def test_scaffold_rejects_invalid_names(tmp_path: Path, name: str) -> None:
    result = run_cli("new", "plugin", name, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
