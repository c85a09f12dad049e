"""The docs are tested against the code: hook specs documented, CLI examples real.

Documented training commands are trained for real, on small generated data, and what
they print is compared line by line with the documented run log, numbers masked.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import mlrun
from mlrun import hookspecs
from mlrun.cli import main

from conftest import QUIET, RECIPES, REPO, SMALL_RECIPE, write_recipe

# writing-plugins.md's commands need its example package installed: tests/test_writing_plugins.py;
# own-data.md's need a folder of images (Fashion-MNIST written as PNG files): tests/test_own_data.py
ELSEWHERE = ("writing-plugins.md", "own-data.md")
DOCS = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name not in ELSEWHERE)]
SPECS = sorted(name for name in dir(hookspecs) if name.startswith("register_"))


def shell_commands(path: Path) -> list[str]:
    """Lines starting with `mlrun ` inside ```sh blocks, comments stripped."""
    blocks = re.findall(r"```sh\n(.*?)```", path.read_text(), flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("mlrun ")]


def test_every_hook_spec_has_a_docstring_and_is_documented() -> None:
    architecture = (REPO / "docs" / "architecture.md").read_text()
    from mlrun.components import BUILTIN_KINDS

    assert set(SPECS) == {cls.hook for cls in BUILTIN_KINDS} | {"register_kinds"}
    for name in SPECS:
        assert getattr(hookspecs, name).__doc__, name
        assert f"`{name}`" in architecture, f"{name} is missing from docs/architecture.md"


COMMANDS = [(path.name, command) for path in DOCS for command in shell_commands(path)]
RUN_PLACEHOLDER = "runs/summary-20261130-131159"  # the run folder the docs' examples name


NOT_TRAINING = ("list", "check", "plugins", "resume", "predict", "evaluate", "export", "runs", "new", "schema")


def is_training(command: str) -> bool:
    """`mlrun RECIPE ...` and `mlrun run RECIPE ...` train; the other subcommands do not."""
    return shlex.split(command)[1] not in NOT_TRAINING


def documented_run_logs() -> list[list[str]]:
    """The README's run logs: the blocks that start with `training ` (`make run`'s first, then summary_val's)."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", (REPO / "README.md").read_text(), flags=re.S | re.M)
    return [body.splitlines() for lang, body in blocks if not lang and body.startswith("training ")]


def documented_run_log() -> list[str]:
    """The README's run log of `make run` (= `mlrun recipes/summary.toml`)."""
    return documented_run_logs()[0]


def shape(line: str) -> str:
    """A run-log line with what differs from run to run masked: folders, device, numbers."""
    line = re.sub(r"(run folder: |metrics in )\S+", r"\1RUN_DIR", line)
    line = re.sub(r" on (cpu|cuda(:\d+)?|mps),", " on DEVICE,", line)
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", line)


def general_shape(line: str) -> str:
    """:func:`shape`, also masking the model, the dataset and the plural of "epochs"."""
    line = re.sub(r"^training \w+ on \w+ ", "training MODEL on DATASET ", shape(line))
    return re.sub(r"\bN epochs?\b", "N epochs", line)


def collapsed(shapes: list[str]) -> list[str]:
    """Runs of equal shapes (the epoch lines) as one."""
    return [s for i, s in enumerate(shapes) if i == 0 or s != shapes[i - 1]]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, idx_root: Path) -> Path:
    """A finished one-epoch run on small generated data, standing in for the docs' run folder."""
    folder = tmp_path_factory.mktemp("docs-run")
    recipe_path = write_recipe(folder / "summary.toml", SMALL_RECIPE.format(root=idx_root))
    overrides = ["train.epochs=1", f"train.output_dir={folder / 'runs'}"]
    return mlrun.train(recipe_path, overrides, registry=mlrun.default_registry(autoload=False), **QUIET).folder.path


def test_the_readme_run_log_is_what_a_run_prints(idx_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`make run` (mlrun recipes/summary.toml), on the small generated Fashion-MNIST: same lines, same formats."""
    assert main([str(RECIPES / "summary.toml"), "--data", str(idx_root)]) == 0
    printed = capsys.readouterr().out.splitlines()
    documented = documented_run_log()
    assert len(documented) == 9 and printed[0].startswith("training classifier on fashion_mnist (600 train")
    assert [shape(line) for line in printed] == [shape(line) for line in documented]
    # the run folder is named as documented: runs/<recipe>-<timestamp>
    assert re.fullmatch(r".*run folder: runs/summary-\d{8}-\d{6}", printed[0])


TRAINING = [(doc, command) for doc, command in COMMANDS if is_training(command)]


@pytest.mark.parametrize(
    ("doc", "command"),
    [pytest.param(doc, command, marks=[pytest.mark.slow] if "--nproc" in command else []) for doc, command in TRAINING],
    ids=[c for _, c in TRAINING],
)
def test_documented_training_commands_train_and_print_the_documented_log(
    doc: str,
    command: str,
    idx_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Each training command in the docs trains for real (small data) and prints lines of the documented shapes."""
    monkeypatch.chdir(REPO)  # the docs' recipe paths are relative to the repository root
    args = shlex.split(command)[1:] + ["--data", str(idx_root), f"train.output_dir={tmp_path / 'runs'}"]
    assert main(args) == 0, f"{doc}: `{command}` failed"
    printed = [line for line in capfd.readouterr().out.splitlines() if line]
    if "--nproc" in command:  # the one line a distributed run adds, documented in docs/distributed.md
        (extra,) = [line for line in printed if line.startswith("distributed: ")]
        assert re.fullmatch(r"distributed: 2 processes \(gloo\); batch size 64 per process, 128 in all", extra)
        printed.remove(extra)
    # Without a validation split the log has the shape of make run's; with one, that of summary_val's.
    assert collapsed([general_shape(line) for line in printed]) in [
        collapsed([general_shape(line) for line in log]) for log in documented_run_logs()
    ]
    assert len(list((tmp_path / "runs").iterdir())) == 1


OTHERS = [(doc, command) for doc, command in COMMANDS if not is_training(command)]


@pytest.mark.parametrize(("doc", "command"), OTHERS, ids=[c for _, c in OTHERS])
def test_cli_examples_in_the_docs_are_real(
    doc: str, command: str, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each documented command that does not train runs as written (the training ones: above)."""
    monkeypatch.chdir(REPO)
    args = shlex.split(command.replace(RUN_PLACEHOLDER, str(tiny_run)))[1:]
    if args[0] == "runs":
        args += ["--dir", str(tiny_run.parent)]
    elif args[0] == "new":
        args += ["--dir", str(tmp_path)]
    assert main(args) == 0, f"{doc}: `{command}` failed"


def test_readme_has_the_two_commands_first() -> None:
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.S).group(1)
    assert first_block.splitlines()[0].startswith("make run")
    assert first_block.splitlines()[1].startswith("make test")
