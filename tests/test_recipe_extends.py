"""Recipes that compose (issue #17): ``extends``, its merge rules, its error chains, ``check --explain``."""

from __future__ import annotations

from pathlib import Path

import pytest

import mlrun
from mlrun.cli import main
from mlrun.errors import UsageError
from mlrun.recipe import load_recipe
from mlrun.recipe_file import read_recipe_file

from conftest import QUIET, write_recipe

BASE = """\
[dataset]
name = "synthetic"
size = 64

[[transforms]]
name = "to_tensor"

[[transforms]]
name = "normalize"
mean = [0.5]
std = [0.5]

[model]
name = "mlp"
hidden_sizes = [32, 16]
dropout = 0.1

[criterion]
name = "cross_entropy"

[optimizer]
name = "adam"
lr = 0.01
weight_decay = 0.001

[train]
epochs = 1
batch_size = 16
"""


def problems_of(path: Path, registry, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(UsageError) as info:
        load_recipe(path, registry, overrides)
    return [str(info.value), *info.value.problems]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write_recipe(tmp_path / "base.toml", BASE)


def test_tables_merge_deeply_and_lists_are_replaced_whole(registry, base: Path, tmp_path: Path) -> None:
    child = write_recipe(
        tmp_path / "child.toml",
        'extends = "base.toml"\n[model]\ndropout = 0.3\n[[transforms]]\nname = "to_tensor"\n[train]\nepochs = 2\n',
    )
    recipe = load_recipe(child, registry)
    assert recipe.model.component.name == "mlp"
    assert recipe.model.params["hidden_sizes"] == [32, 16]  # kept from the base
    assert recipe.model.params["dropout"] == 0.3  # the child wins
    assert [t.component.name for t in recipe.transforms] == ["to_tensor"]  # the list is replaced, not merged
    assert (recipe.train.epochs, recipe.train.batch_size) == (2, 16)
    assert recipe.optimizer.params["weight_decay"] == 0.001
    assert recipe.run_name == "child"  # the run is named after the recipe given, not its base


def test_later_files_win_and_overrides_win_over_all(registry, base: Path, tmp_path: Path) -> None:
    write_recipe(tmp_path / "wide.toml", "[model]\nhidden_sizes = [64]\ndropout = 0.2\n[optimizer]\nlr = 0.1\n")
    (tmp_path / "parts").mkdir()
    write_recipe(tmp_path / "parts" / "slow.toml", "[optimizer]\nlr = 0.001\n")
    child = write_recipe(
        tmp_path / "child.toml", 'extends = ["base.toml", "wide.toml", "parts/slow.toml"]\n[model]\ndropout = 0.4\n'
    )
    recipe = load_recipe(child, registry, ["model.hidden_sizes=[8]"])
    assert recipe.model.params["dropout"] == 0.4  # the recipe itself over its bases
    assert recipe.optimizer.params["lr"] == 0.001  # the last base over the earlier ones
    assert recipe.model.params["hidden_sizes"] == [8]  # the override over every file
    assert recipe.optimizer.params["weight_decay"] == 0.001


def test_bases_extend_bases_relative_to_their_own_folder(registry, tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    write_recipe(tmp_path / "shared" / "base.toml", BASE)
    write_recipe(tmp_path / "shared" / "mlp.toml", 'extends = "base.toml"\n[optimizer]\nlr = 0.005\n')
    (tmp_path / "exp").mkdir()
    child = write_recipe(tmp_path / "exp" / "run.toml", 'extends = "../shared/mlp.toml"\n[train]\nseed = 3\n')
    recipe = load_recipe(child, registry)
    assert (recipe.optimizer.params["lr"], recipe.train.seed, recipe.dataset.params["size"]) == (0.005, 3, 64)


def test_a_bad_key_in_a_base_names_the_base_and_the_chain(registry, tmp_path: Path) -> None:
    write_recipe(tmp_path / "base.toml", BASE.replace("lr = 0.01", "lerning_rate = 0.01"))
    write_recipe(tmp_path / "mid.toml", 'extends = "base.toml"\n[model]\ndropout = 2.0\n')
    child = write_recipe(tmp_path / "child.toml", 'extends = "mid.toml"\n[train]\nepochs = 0\n')
    lines = problems_of(child, registry)
    assert lines[0] == f"{child}: 3 problems found; nothing was run"
    assert f"{tmp_path}/base.toml (extended by {tmp_path}/mid.toml, extended by {child}): " in lines[2]
    assert "optimizer.lerning_rate: unknown parameter for optimizer 'adam' — did you mean 'lr'?" in lines[2]
    assert lines[1].startswith(f"{tmp_path}/mid.toml (extended by {child}): model.dropout: ")
    assert lines[3].startswith(f"{child}: train.epochs: ")


def test_an_override_of_a_key_from_a_base_is_named_as_the_override(registry, base: Path, tmp_path: Path) -> None:
    child = write_recipe(tmp_path / "child.toml", 'extends = "base.toml"\n')
    lines = problems_of(child, registry, ("optimizer.lr=-1",))
    assert lines[1].startswith("override 'optimizer.lr=-1': optimizer.lr: ")


def test_a_base_may_be_partial_but_the_whole_must_be_complete(registry, tmp_path: Path) -> None:
    write_recipe(tmp_path / "train.toml", "[train]\nepochs = 3\n")
    child = write_recipe(tmp_path / "child.toml", 'extends = "train.toml"\n[dataset]\nname = "synthetic"\n')
    text = "\n".join(problems_of(child, registry))
    assert f"{child}: missing section [model]" in text


def test_missing_base_is_reported_with_the_chain(registry, base: Path, tmp_path: Path) -> None:
    write_recipe(tmp_path / "mid.toml", 'extends = "gone.toml"\n')
    child = write_recipe(tmp_path / "child.toml", 'extends = "mid.toml"\n')
    (message,) = problems_of(child, registry)
    assert message == (
        f"{tmp_path}/mid.toml (extended by {child}): extends: {tmp_path}/gone.toml: no such recipe file "
        f"(paths in extends are relative to {tmp_path})"
    )


def test_a_cycle_is_refused_with_the_loop(registry, tmp_path: Path) -> None:
    write_recipe(tmp_path / "a.toml", 'extends = "b.toml"\n')
    write_recipe(tmp_path / "b.toml", 'extends = "./a.toml"\n')
    (message,) = problems_of(tmp_path / "a.toml", registry)
    assert message.startswith(f"{tmp_path}/b.toml (extended by {tmp_path}/a.toml): extends: a cycle (")
    assert f"{tmp_path}/a.toml -> {tmp_path}/b.toml -> {tmp_path}/a.toml" in message
    write_recipe(tmp_path / "self.toml", 'extends = "self.toml"\n')
    assert "a cycle" in problems_of(tmp_path / "self.toml", registry)[0]


def test_too_many_bases_are_refused(registry, base: Path, tmp_path: Path) -> None:
    child = write_recipe(tmp_path / "child.toml", f"extends = {['base.toml'] * 70}\n".replace("'", '"'))
    (message,) = problems_of(child, registry)
    assert "extends too many files (over 64 in all" in message


def test_a_base_that_does_not_parse_names_the_chain(registry, tmp_path: Path) -> None:
    write_recipe(tmp_path / "base.toml", "[model]\nname = \n")
    child = write_recipe(tmp_path / "child.toml", 'extends = "base.toml"\n')
    (message,) = problems_of(child, registry)
    assert message.startswith(f"{tmp_path}/base.toml:2:8: TOML syntax error")
    assert message.endswith(f"(extended by {child})")


@pytest.mark.parametrize("value", ["1", "[]", '["base.toml", 2]', '""', "{ file = 'base.toml' }"])
def test_extends_must_name_files(registry, base: Path, tmp_path: Path, value: str) -> None:
    child = write_recipe(tmp_path / "child.toml", f"extends = {value}\n")
    (message,) = problems_of(child, registry)
    assert message.startswith(f"{child}: extends: expected a file name or a list of them")


def test_extends_after_a_table_header_is_refused_with_the_fix(registry, base: Path, tmp_path: Path) -> None:
    child = write_recipe(tmp_path / "child.toml", '[train]\nepochs = 2\nextends = "base.toml"\n')
    (message,) = problems_of(child, registry)
    assert message.startswith(f"{child}: train.extends: extends belongs at the top of the file, before the first")


def test_an_override_cannot_add_extends(registry, base: Path) -> None:
    # Bases are read from files only: the command line changes keys, it does not import recipes.
    assert "extends: unknown section" in problems_of(base, registry, ("extends=other.toml",))[1]


def test_check_explain_names_the_source_of_every_key(capsys, base: Path, tmp_path: Path) -> None:
    write_recipe(tmp_path / "child.toml", 'extends = "base.toml"\n[model]\ndropout = 0.3\n')
    assert main(["check", "child.toml", "optimizer.lr=0.002", "--explain"]) == 0
    lines = {line.split(" = ")[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["model.dropout"].endswith("# child.toml")
    assert lines["model.hidden_sizes"].startswith("model.hidden_sizes = [32, 16] ")
    assert lines["model.hidden_sizes"].endswith("# base.toml (extended by child.toml)")
    assert lines["transforms.1.mean"].endswith("# base.toml (extended by child.toml)")
    assert lines["optimizer.lr"].endswith("# override 'optimizer.lr=0.002'")
    assert lines["optimizer.betas"].endswith("# default")
    assert lines["train.eval_batch_size"].endswith("# default")
    assert lines["metrics.0.name"].endswith("# default")


@pytest.mark.slow
def test_the_run_folder_keeps_the_resolved_recipe_and_reloads(registry, base: Path, tmp_path: Path, capsys) -> None:
    child = write_recipe(tmp_path / "child.toml", 'extends = "base.toml"\n[model]\ndropout = 0.3\n')
    result = mlrun.train(child, ["train.epochs=1"], registry=registry, **QUIET)
    folder = result.folder.path
    saved = read_recipe_file(folder / "recipe.toml")
    assert "extends" not in saved and saved["model"]["hidden_sizes"] == [32, 16] and saved["model"]["dropout"] == 0.3
    assert load_recipe(folder / "recipe.toml", registry).to_dict() == load_recipe(child, registry).to_dict()
    # The commands that reload the run folder's recipe: evaluate, and resume (training on).
    assert main(["evaluate", str(folder)]) == 0
    assert main(["resume", str(folder), "train.epochs=2", "--force"]) == 0
    assert "epoch 2/2" in capsys.readouterr().out


def test_the_command_refuses_a_broken_chain_with_exit_2(capsys, tmp_path: Path) -> None:
    write_recipe(tmp_path / "a.toml", 'extends = "b.toml"\n')
    write_recipe(tmp_path / "b.toml", 'extends = "a.toml"\n')
    assert main(["check", "a.toml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: b.toml (extended by a.toml): extends: a cycle (a.toml -> b.toml -> a.toml)")
    assert "Traceback" not in err
