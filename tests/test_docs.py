"""The docs are tested against the code: hook specs documented, CLI examples real."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import REPO
from mlrun import hookspecs
from mlrun.cli import _without_launch_options, main

# writing-plugins.md's commands need its example package installed: tests/test_writing_plugins.py
DOCS = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "writing-plugins.md")]
SPECS = sorted(name for name in dir(hookspecs) if name.startswith("register_"))


def shell_commands(path: Path) -> list[str]:
    """Lines starting with `mlrun ` inside ```sh blocks, comments stripped."""
    blocks = re.findall(r"```sh\n(.*?)```", path.read_text(), flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("mlrun ")]


def test_every_hook_spec_has_a_docstring_and_is_documented() -> None:
    architecture = (REPO / "docs" / "architecture.md").read_text()
    assert len(SPECS) == 5
    for name in SPECS:
        assert getattr(hookspecs, name).__doc__, name
        assert f"`{name}`" in architecture, f"{name} is missing from docs/architecture.md"


COMMANDS = [(path.name, command) for path in DOCS for command in shell_commands(path)]
RUN_PLACEHOLDER = "runs/summary-20261130-131159"  # the run folder the docs' examples name


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, idx_root: Path) -> Path:
    """A finished one-epoch run on small generated data, standing in for the docs' run folder."""
    from conftest import SMALL_RECIPE, write_recipe
    from mlrun import engine
    from mlrun.plugins import PluginSettings, load_plugins
    from mlrun.recipe import load_recipe
    from mlrun.registry import build_registry

    folder = tmp_path_factory.mktemp("docs-run")
    recipe_path = write_recipe(folder / "summary.toml", SMALL_RECIPE.format(root=idx_root))
    registry = build_registry(load_plugins(PluginSettings(autoload=False)))
    recipe = load_recipe(recipe_path, registry, ["train.epochs=1", f"train.output_dir={folder / 'runs'}"])
    return engine.run(recipe, echo=lambda line: None, progress=False).folder.path


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_cli_examples_in_the_docs_are_real(
    doc: str, command: str, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each documented command runs; training runs are checked (validated, not trained)."""
    monkeypatch.chdir(REPO)
    args = shlex.split(command.replace(RUN_PLACEHOLDER, str(tiny_run)))[1:]
    if args[0] == "runs":
        args += ["--dir", str(tiny_run.parent)]
    elif args[0] == "new":
        args += ["--dir", str(tmp_path)]
    elif args[0] not in ("list", "check", "plugins", "resume", "predict", "evaluate"):
        # A documented run is validated, not trained; launch options do not apply to check.
        args = ["check", *_without_launch_options([a for a in args if a != "run"])]
    assert main(args) == 0, f"{doc}: `{command}` failed"


def test_readme_has_the_two_commands_first() -> None:
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.S).group(1)
    assert first_block.splitlines()[0].startswith("make run")
    assert first_block.splitlines()[1].startswith("make test")
