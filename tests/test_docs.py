"""The docs are tested against the code: hook specs documented, CLI examples real."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import REPO
from mlrun import hookspecs
from mlrun.cli import main

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


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_cli_examples_in_the_docs_are_real(doc: str, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each documented command parses; runs are checked (validated, not trained)."""
    monkeypatch.chdir(REPO)
    args = shlex.split(command)[1:]
    if args[0] not in ("list", "check", "plugins", "new"):
        args = ["check", *(a for a in args if a != "run")]
    assert main(args) == 0, f"{doc}: `{command}` failed"


def test_readme_has_the_two_commands_first() -> None:
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.S).group(1)
    assert first_block.splitlines()[0].startswith("make run")
    assert first_block.splitlines()[1].startswith("make test")
