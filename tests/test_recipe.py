"""Recipes: loading, overrides, validation that reports every problem with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from mlrun.errors import UsageError
from mlrun.recipe import load_recipe
from mlrun.recipe_file import parse_override

from conftest import RECIPES, write_recipe


def problems_of(path: Path, registry, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(UsageError) as info:
        load_recipe(path, registry, overrides)
    return [str(info.value), *info.value.problems]


def test_summary_recipe_resolves_to_the_notes_summary(registry) -> None:
    recipe = load_recipe(RECIPES / "summary.toml", registry)
    assert recipe.dataset.component.name == "fashion_mnist"
    assert [t.component.name for t in recipe.transforms] == ["to_tensor", "normalize"]
    assert recipe.transforms[1].params == {"mean": [0.5], "std": [0.5]}
    assert recipe.model.component.name == "classifier"
    assert recipe.criterion.component.name == "nll"
    assert recipe.optimizer.component.name == "adam"
    assert recipe.optimizer.params["lr"] == 0.01
    assert (recipe.train.epochs, recipe.train.batch_size, recipe.train.shuffle) == (5, 64, True)


def test_resolved_recipe_fills_defaults_and_round_trips(registry, tmp_path: Path) -> None:
    recipe = load_recipe(RECIPES / "summary.toml", registry)
    resolved = recipe.to_dict()
    assert resolved["optimizer"]["betas"] == [0.9, 0.999]
    assert resolved["train"]["eval_batch_size"] == 1000
    again = write_recipe(tmp_path / "again.toml", tomli_w.dumps(resolved))
    assert load_recipe(again, registry).to_dict() == resolved


def test_overrides_are_applied(registry) -> None:
    recipe = load_recipe(
        RECIPES / "summary.toml", registry,
        ["optimizer.lr=0.003", "train.epochs=1", "train.device=cpu", "transforms.1.mean=[0.25]"],
    )  # fmt: skip
    assert recipe.optimizer.params["lr"] == 0.003
    assert recipe.train.epochs == 1 and recipe.train.device == "cpu"
    assert recipe.transforms[1].params["mean"] == [0.25]


def test_override_can_swap_a_component(registry) -> None:
    recipe = load_recipe(
        RECIPES / "summary.toml", registry,
        ["model.name=mlp", "model.output=log_probs", "model.hidden_sizes=[32]"],
    )  # fmt: skip
    assert recipe.model.component.name == "mlp"
    assert recipe.model.params["hidden_sizes"] == [32]


@pytest.mark.parametrize(
    ("text", "value"),
    [("a.b=1", 1), ("a.b=0.5", 0.5), ("a.b=true", True), ("a.b=[1, 2]", [1, 2]),
     ('a.b="x y"', "x y"), ("a.b=cpu", "cpu"), ("a.b=/tmp/data", "/tmp/data")],
)  # fmt: skip
def test_override_values_are_toml(text: str, value: object) -> None:
    assert parse_override(text).value == value


@pytest.mark.parametrize("text", ["train.epochs", "=3", "a..b=1", "a.b=[1, 2"])
def test_malformed_overrides_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="override"):
        parse_override(text)


def test_unknown_parameter_gets_did_you_mean_and_accepted_list(registry) -> None:
    lines = problems_of(RECIPES / "summary.toml", registry, ("optimizer.lerning_rate=0.1",))
    assert lines[1] == (
        "override 'optimizer.lerning_rate=0.1': optimizer.lerning_rate: unknown parameter for "
        "optimizer 'adam' — did you mean 'lr'? (accepted: lr, betas, eps, weight_decay, fused, decay_bias_and_norm)"
    )


def test_every_problem_is_reported_with_file_and_key(registry, tmp_path: Path) -> None:
    path = write_recipe(
        tmp_path / "bad.toml",
        """
[dataset]
name = "fashion_mnistt"
[model]
name = "classifier"
[criterion]
name = "nll"
[optimizer]
name = "adam"
lr = "0.01"
[train]
epochs = "ten"
[trian]
x = 1
""",
    )
    lines = problems_of(path, registry)
    assert lines[0] == f"{path}: 4 problems found; nothing was run"
    text = "\n".join(lines)
    assert f"{path}: trian: unknown section — did you mean 'train'?" in text
    assert f"{path}: dataset.name: unknown dataset 'fashion_mnistt' — did you mean 'fashion_mnist'?" in text
    assert f'{path}: optimizer.lr: expected number (> 0), got "0.01" — write it without quotes: lr = 0.01' in text
    assert f'{path}: train.epochs: must be a valid integer, got "ten"' in text


def test_missing_section_lists_the_choices(registry, tmp_path: Path) -> None:
    path = write_recipe(
        tmp_path / "nomodel.toml", '[dataset]\nname="mnist"\n[criterion]\nname="nll"\n[optimizer]\nname="sgd"\n'
    )
    lines = problems_of(path, registry)
    assert any("missing section [model]" in line and "classifier" in line for line in lines)


def test_import_paths_are_rejected(registry, tmp_path: Path) -> None:
    path = write_recipe(
        tmp_path / "evil.toml",
        (RECIPES / "summary.toml").read_text().replace('name = "adam"', 'name = "torch.optim.AdamW"'),
    )
    lines = problems_of(path, registry)
    assert any("optimizer.name: 'torch.optim.AdamW' looks like an import path" in line for line in lines)


def test_log_softmax_model_with_cross_entropy_is_a_warning(registry) -> None:
    recipe = load_recipe(RECIPES / "summary.toml", registry, ["criterion.name=cross_entropy"])
    assert len(recipe.warnings) == 1 and "criterion 'nll' fits" in recipe.warnings[0]


@pytest.mark.parametrize(
    ("model", "criterion", "fits"),
    [("sequential", "nll", "cross_entropy"), ("network_alternative", "nll", "nll_probs"),
     ("network_alternative", "cross_entropy", "nll_probs"), ("classifier", "nll_probs", "nll")],
)  # fmt: skip
def test_mismatched_model_and_criterion_are_refused(registry, model: str, criterion: str, fits: str) -> None:
    lines = problems_of(RECIPES / "summary.toml", registry, (f"model.name={model}", f"criterion.name={criterion}"))
    assert "criterion.name" in lines[1] and f"use criterion '{fits}'" in lines[1]


def test_mismatch_check_can_be_turned_off(registry) -> None:
    recipe = load_recipe(
        RECIPES / "summary.toml", registry,
        ["model.name=sequential", "criterion.name=nll", "train.check_model_criterion=false"],
    )  # fmt: skip
    assert recipe.criterion.component.name == "nll"


def test_mlp_output_parameter_decides_the_pairing(registry) -> None:
    lines = problems_of(RECIPES / "summary.toml", registry, ("model.name=mlp",))
    assert "model 'mlp' outputs raw logits" in lines[1]
    recipe = load_recipe(RECIPES / "summary.toml", registry, ["model.name=mlp", "model.output=log_probs"])
    assert recipe.criterion.component.name == "nll"


def test_cross_field_check_runs_before_anything_is_built(registry) -> None:
    lines = problems_of(RECIPES / "summary.toml", registry, ("transforms.1.std=[0.5, 0.5]",))
    assert "transforms.1: mean has 1 values but std has 2" in lines[1]


def test_file_problems(tmp_path: Path, registry) -> None:
    assert "no such recipe file" in problems_of(tmp_path / "nope.toml", registry)[0]
    assert "is a directory" in problems_of(tmp_path, registry)[0]
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"# caf\xe9\n")
    assert "not UTF-8" in problems_of(latin, registry)[0]
    broken = write_recipe(tmp_path / "broken.toml", "[model]\nname = \n")
    assert problems_of(broken, registry)[0].startswith(f"{broken}:2:8: TOML syntax error")
