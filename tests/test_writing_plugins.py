"""docs/writing-plugins.md is followed to the letter: its files are written, installed and run.

The fast tests check that the guide covers the whole descriptor API (every field and
class variable of every descriptor, every injected argument, every hook spec), agrees
with `mlrun new plugin`, and that its package loads through mlrun's plugin machinery
with one component of every kind. The slow test pip-installs the package and runs
every command the guide shows, and the package's own tests.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mlrun import hookspecs
from mlrun.components import BUILTIN_KINDS, Component

from conftest import REPO, pip_install_editable
from plugin_fakes import install_fake

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

GUIDE = REPO / "docs" / "writing-plugins.md"
DIST, MODULE, VERSION = "mlrun-acme", "mlrun_acme", "0.1.0"


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", GUIDE.read_text(), flags=re.S)


def package_files() -> dict[str, str]:
    """The guide's package: every block that starts with `# path`, by path."""
    return {body.splitlines()[0].removeprefix("# ").strip(): body for lang, body in blocks() if lang != "sh"}


def commands() -> list[str]:
    return [line.strip() for lang, body in blocks() if lang == "sh" for line in body.splitlines() if line.strip()]


def write_package(root: Path) -> Path:
    for relative, body in package_files().items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    return root


def section(heading: str) -> str:
    """The guide's section whose heading contains ``heading``, up to the next heading as deep (code blocks included)."""
    lines, found, level, fenced = GUIDE.read_text().splitlines(), None, 0, False
    for index, line in enumerate(lines):
        fenced ^= line.startswith("```")
        depth = len(line) - len(line.lstrip("#"))
        if fenced or not depth or not line[depth:].startswith(" "):
            continue
        if found is not None and depth <= level:
            return "\n".join(lines[found:index])
        if found is None and heading in line:
            found, level = index + 1, depth
    assert found is not None, f"the guide has no section '{heading}'"
    return "\n".join(lines[found:])


def table_rows(text: str) -> Iterator[list[str]]:
    """The cells of every table row in ``text`` (header and separator rows too)."""
    for line in text.splitlines():
        if line.startswith("|"):
            yield [cell.strip() for cell in line.strip().strip("|").split("|")]


def own_fields(cls: type[Component]) -> list[str]:
    """The dataclass fields a descriptor class adds to Component's (all of them for Component)."""
    inherited = set() if cls is Component else {f.name for f in dataclasses.fields(Component)}
    return [f.name for f in dataclasses.fields(cls) if f.name not in inherited]


def class_variables() -> list[str]:
    return [name for name, hint in Component.__annotations__.items() if "ClassVar" in str(hint)]


# ------------------------------------------------------------------ the guide covers the API


def test_every_hook_spec_is_in_the_guide_with_its_docstring() -> None:
    text = GUIDE.read_text()
    specs = [name for name in dir(hookspecs) if name.startswith("register_")]
    for name in specs:
        first_line = getattr(hookspecs, name).__doc__.strip().splitlines()[0]
        assert f"| `{name}` |" in text and first_line in text, name


def test_every_block_is_a_package_file_or_commands() -> None:
    for lang, body in blocks():
        assert lang == "sh" or re.match(r"# [\w./-]+\n", body), body[:60]


def test_every_link_within_the_docs_finds_its_heading() -> None:
    def slugs(path: Path) -> set[str]:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
        return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}

    for target, anchor in re.findall(r"\]\(([\w.-]*)#([\w-]+)\)", GUIDE.read_text()):
        assert anchor in slugs(GUIDE.parent / target if target else GUIDE), f"{target}#{anchor}"


def test_every_common_field_is_in_the_table_of_what_every_component_has() -> None:
    rows = {row[0] for row in table_rows(section("What every component has"))}
    assert {f"`{name}`" for name in own_fields(Component)} <= rows


@pytest.mark.parametrize("cls", BUILTIN_KINDS, ids=lambda cls: cls.__name__)
def test_each_kind_has_a_worked_example_and_a_row_for_each_field(cls: type[Component]) -> None:
    text = section(f"(`{cls.__name__}`)")
    assert f"# src/{MODULE}/" in text, f"the {cls.kind} section has no worked example"
    assert f"{cls.__name__}(" in text, f"the {cls.kind} example does not construct a {cls.__name__}"
    fields = own_fields(cls)
    rows = {row[0] for row in table_rows(text)}
    for name in fields:
        assert f"`{name}`" in rows, f"{cls.__name__}.{name} has no row in the {cls.kind} section's table"
    if not fields:
        assert f"`{cls.__name__}` has no fields of its own" in text


def test_every_class_variable_is_in_the_table_of_a_kind_of_your_own() -> None:
    rows = [row[0] for row in table_rows(section("A kind of your own")) if row[0].startswith("`")]
    assert rows == [f"`{name}`" for name in class_variables()]


def test_the_injected_arguments_table_is_what_each_kind_declares() -> None:
    found: dict[str, tuple[set[str], set[str]]] = {}
    for kinds, always, optional in list(table_rows(section("Injected arguments")))[2:]:
        for kind in kinds.split(", "):
            found[kind] = (set(re.findall(r"`(\w+)", always)), set(re.findall(r"`(\w+)", optional)))
    assert found == {cls.kind: (set(cls.injected), set(cls.optional_injected)) for cls in BUILTIN_KINDS}


def test_the_guide_package_is_what_mlrun_new_plugin_writes(tmp_path: Path) -> None:
    from mlrun.scaffold import create_plugin

    scaffolded = tomllib.loads((create_plugin(DIST, tmp_path) / "pyproject.toml").read_text())
    guide = tomllib.loads(package_files()["pyproject.toml"])
    for key in ("build-system", "tool"):
        assert guide[key] == scaffolded[key], key
    for key in ("name", "version", "dependencies", "entry-points"):
        assert guide["project"][key] == scaffolded["project"][key], key
    assert guide["project"]["dependencies"][0] == "torch-mlrun"  # never "mlrun": another project's name
    assert guide["project"]["entry-points"] == {"mlrun": {MODULE: f"{MODULE}.plugin"}}


# ------------------------------------------------------------------ the package loads


@pytest.fixture
def guide_plugin(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The guide's package, installed as a distribution with its entry point (no pip)."""
    package = write_package(site.parent / DIST)
    install_fake(site, DIST, "", entry=MODULE, version=VERSION)
    (site / f"{MODULE}.py").unlink()  # the fake's module: the guide's package takes its place
    entry_points = next(site.glob("*.dist-info")) / "entry_points.txt"
    entry_points.write_text(f"[mlrun]\n{MODULE} = {MODULE}.plugin\n")
    monkeypatch.syspath_prepend(str(package / "src"))
    monkeypatch.setenv("MLRUN_PLUGINS", DIST)
    yield package
    for name in [m for m in sys.modules if m == MODULE or m.startswith(f"{MODULE}.")]:
        del sys.modules[name]


def test_the_guide_package_gives_one_component_of_every_kind(guide_plugin: Path, idx_root: Path) -> None:
    import mlrun

    registry = mlrun.default_registry()
    (info,) = [i for i in registry.plugins.infos.values() if i.name == MODULE]
    assert info.status == "ok", info.reasons
    mine = [entry.component for entry in registry if entry.plugin is info]
    assert sorted(c.kind for c in mine) == sorted(cls.kind for cls in BUILTIN_KINDS)
    assert all(c.name.startswith("acme_") for c in mine)

    recipe = mlrun.check(guide_plugin / "recipes" / "acme.toml", registry=registry, data=idx_root)
    assert {spec.component.name for spec in [recipe.dataset, recipe.model, recipe.criterion, recipe.optimizer]} == {
        "acme_fashion_subset", "acme_lenet5", "acme_poly1", "acme_adamw",
    }  # fmt: skip
    assert recipe.scheduler is not None and recipe.scheduler.component.name == "acme_warmup_cosine"
    assert [spec.component.name for spec in recipe.transforms][-1] == "acme_random_erasing"
    # the qualified name the guide shows picks the same component
    qualified = mlrun.check(recipe.path, ['model.name="mlrun-acme:acme_lenet5"'], registry=registry, data=idx_root)
    assert qualified.model.entry == recipe.model.entry


def test_the_validate_example_refuses_what_it_says(guide_plugin: Path, idx_root: Path) -> None:
    import mlrun
    from mlrun.errors import UsageError

    recipe = guide_plugin / "recipes" / "acme.toml"
    with pytest.raises(UsageError) as caught:
        mlrun.check(recipe, ["transforms.2.min_size=12"], registry=mlrun.default_registry(), data=idx_root)
    assert "transforms.2: min_size (12) is larger than max_size (10): swap them" in "\n".join(caught.value.problems)


def test_the_scheduler_example_refuses_a_warmup_longer_than_the_run(guide_plugin: Path, idx_root: Path) -> None:
    import mlrun
    from mlrun.errors import UsageError

    overrides = ["scheduler.warmup_epochs=2.0", "train.epochs=2"]
    with pytest.raises(UsageError, match=r"scheduler 'acme_warmup_cosine' cannot be built .* shorten warmup_epochs"):
        mlrun.train(guide_plugin / "recipes" / "acme.toml", overrides, data=idx_root, echo=lambda line: None)
    assert not (Path.cwd() / "runs").exists() and not (guide_plugin / "runs").exists()  # nothing was written


# ------------------------------------------------------------------ the guide, followed to the letter


def run_folder(output: str) -> str:
    """The run folder a training command names."""
    match = re.search(r"run folder: (\S+)", output)
    assert match, output
    return match[1]


def epoch_lines(output: str) -> list[str]:
    """A run's epoch lines without their timings."""
    return [re.sub(r"\s+[\d.]+s$", "", line) for line in output.splitlines() if line.startswith("epoch ")]


@pytest.mark.slow
def test_the_guide_builds_a_working_plugin(tmp_path: Path, plugin_venv: Path, idx_root: Path) -> None:
    package = write_package(tmp_path / DIST)
    env = {**os.environ, "MLRUN_PLUGINS": DIST, "MLRUN_DATA_DIR": str(idx_root)}
    env.pop("MLRUN_DISABLE_PLUGIN_AUTOLOAD", None)
    outputs = {}
    for command in commands():
        words = shlex.split(command)
        if words[0] == "pip":
            assert words == ["pip", "install", "-e", "."]
            pip_install_editable(plugin_venv, package)
            continue
        if words[:3] == ["mlrun", "new", "plugin"]:
            continue  # the scaffold has its own test (tests/test_scaffold.py), and agrees with the guide (above)
        assert words[0] in ("mlrun", "pytest"), command
        extra = ["-q", "-p", "no:cacheprovider"] if words[0] == "pytest" else []
        result = subprocess.run([str(plugin_venv), "-m", *words, *extra], cwd=package, env=env,
                                capture_output=True, text=True, timeout=600)  # fmt: skip
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        outputs[command] = result.stdout

    listed = [e for e in json.loads(outputs["mlrun list --json"]) if e["plugin"] != "built-in"]
    assert sorted((e["kind"], e["name"]) for e in listed) == sorted([
        ("dataset", "acme_fashion_subset"), ("transform", "acme_random_erasing"), ("model", "acme_lenet5"),
        ("criterion", "acme_poly1"), ("optimizer", "acme_adamw"), ("scheduler", "acme_warmup_cosine"),
        ("metric", "acme_brier"), ("callback", "acme_jsonl"),
    ])  # fmt: skip
    assert {e["plugin"] for e in listed} == {f"{DIST}=={VERSION}"}
    fields = {e["name"]: e for e in listed}
    erasing = fields["acme_random_erasing"]
    assert (erasing["random"], erasing["batch"], erasing["per_channel"]) == (True, True, ["value"])
    assert fields["acme_poly1"]["expects"] == ["logits", "log_probs"]
    assert fields["acme_lenet5"]["outputs"] == ["logits", "log_probs"]
    assert fields["acme_fashion_subset"]["channels"] == 1 and fields["acme_fashion_subset"]["tensors"] is True
    assert (fields["acme_brier"]["higher_is_better"], fields["acme_brier"]["needs"]) == (False, "probs")
    hooks = ", ".join(sorted(cls.hook for cls in BUILTIN_KINDS))
    assert re.search(rf"{MODULE}\s+{DIST}=={VERSION}\s+{hooks}\s.*\sok$", outputs["mlrun plugins"], flags=re.M)
    assert "recipes/acme.toml: OK" in outputs["mlrun check recipes/acme.toml"]

    memory, loader = outputs["mlrun recipes/acme.toml"], outputs["mlrun recipes/acme.toml train.data_path=loader"]
    assert "data path: memory" in memory and "data path: loader" in loader
    # the recipe holds out a validation split and keeps the epoch with the lowest Brier score
    assert "val_acme_brier" in memory and "with best.pt (epoch" in memory.splitlines()[-1]
    # the acme_jsonl callback wrote one line per epoch, the figures of metrics.csv
    lines = (package / run_folder(memory) / "acme.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2] and "val_acme_brier" in lines[0]
    # random erasing included, both paths train alike: the same epoch lines and the same weights, bit for bit
    assert len(epoch_lines(memory)) == 2 and epoch_lines(memory) == epoch_lines(loader)
    weights = [torch.load(package / run_folder(out) / "model.pt", weights_only=True) for out in (memory, loader)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])

    count = len(re.findall(r"^def test_", package_files()["tests/test_plugin.py"], flags=re.M))
    assert f"{count} passed" in outputs["pytest"] and "skipped" not in outputs["pytest"]
