"""docs/writing-plugins.md is followed to the letter: its files are written, installed and run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from mlrun import hookspecs

from conftest import REPO, pip_install_editable

GUIDE = REPO / "docs" / "writing-plugins.md"


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_every_hook_spec_is_in_the_guide_with_its_docstring() -> None:
    text = GUIDE.read_text()
    specs = [name for name in dir(hookspecs) if name.startswith("register_")]
    for name in specs:
        first_line = getattr(hookspecs, name).__doc__.strip().splitlines()[0]
        assert f"| `{name}` |" in text and first_line in text, name


def test_every_block_is_a_package_file_or_commands() -> None:
    for lang, body in blocks():
        assert lang == "sh" or re.match(r"# [\w./-]+\n", body), body[:60]


@pytest.mark.slow
def test_the_guide_builds_a_working_plugin(tmp_path: Path, plugin_venv: Path, idx_root: Path) -> None:
    package = tmp_path / "mlrun-acme"
    commands: list[str] = []
    for lang, body in blocks():
        if lang == "sh":
            commands += [line.strip() for line in body.splitlines() if line.strip()]
            continue
        relative = body.splitlines()[0].removeprefix("# ").strip()
        target = package / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)

    env = {**os.environ, "MLRUN_PLUGINS": "acme", "MLRUN_DATA_DIR": str(idx_root)}
    env.pop("MLRUN_DISABLE_PLUGIN_AUTOLOAD", None)
    outputs = {}
    for command in commands:
        words = shlex.split(command)
        if words[0] == "pip":
            assert words == ["pip", "install", "-e", "."]
            pip_install_editable(plugin_venv, package)
        elif words[:3] == ["mlrun", "new", "plugin"]:
            continue  # the scaffold has its own test (tests/test_scaffold.py)
        else:
            assert words[0] == "mlrun", command
            result = subprocess.run([str(plugin_venv), "-m", "mlrun", *words[1:]], cwd=package, env=env,
                                    capture_output=True, text=True, timeout=600)  # fmt: skip
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
            outputs[command] = result.stdout
    assert re.search(r"model\s+acme_net\s+mlrun-acme==0\.1\.0", outputs["mlrun list model"])
    assert re.search(r"acme\s+mlrun-acme==0\.1\.0\s+register_criteria, register_models", outputs["mlrun plugins"])
    assert "epoch 1/1" in outputs["mlrun recipes/acme.toml"]

    tests = subprocess.run([str(plugin_venv), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                           cwd=package, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout
