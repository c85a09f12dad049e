"""``mlrun schema`` (issue #17): a JSON Schema of recipes that accepts every shipped recipe and refuses the bad ones.

The bad recipes are those of tests/test_recipe.py and tests/test_validation_hostile.py that a
schema can express (unknown keys and names, wrong types, out-of-bounds values, missing
sections); each is refused by mlrun itself too, so the two cannot drift apart.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import mlrun
from mlrun.cli import main
from mlrun.errors import UsageError
from mlrun.recipe import validate_recipe
from mlrun.recipe_extends import compose
from mlrun.recipe_file import apply_overrides, parse_override, read_recipe_file
from mlrun.schema import recipe_schema

from conftest import RECIPES

SUMMARY = read_recipe_file(RECIPES / "summary.toml")


@pytest.fixture(scope="module")
def with_plugins() -> mlrun.Registry:
    """The built-ins and the example plugin (recipes/convnet.toml names its components)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLRUN_DISABLE_PLUGIN_AUTOLOAD", "")
        env.setenv("MLRUN_PLUGINS", "convnet")
        return mlrun.default_registry()


@pytest.fixture(scope="module")
def validator(with_plugins: mlrun.Registry) -> jsonschema.protocols.Validator:
    schema = recipe_schema(with_plugins)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def errors(validator: jsonschema.protocols.Validator, data: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_is_accepted(validator, path: Path) -> None:
    assert errors(validator, read_recipe_file(path)) == []  # as written: `extends` and all
    assert errors(validator, compose(path).data) == []  # and with its bases merged in


def test_installed_plugins_components_are_in_it(validator) -> None:
    names = validator.schema["definitions"]["kind.model"]["properties"]["name"]["enum"]
    assert {"classifier", "mlp", "small_cnn", "mlrun-convnet:small_cnn"} <= set(names)
    adam = validator.schema["definitions"]["optimizer.adam"]
    assert adam["properties"]["lr"] == {
        "default": 0.001, "exclusiveMinimum": 0, "type": "number", "description": "number (> 0)"
    }  # fmt: skip
    assert validator.schema["properties"]["train"]["properties"]["epochs"]["minimum"] == 1


#: Bad recipes of the test suite, as overrides of recipes/summary.toml, and what mlrun says of each.
BAD = {
    "unknown section": (["trian.x=1"], "unknown section"),
    "unknown component": (["dataset.name=fashion_mnistt"], "unknown dataset"),
    "import path as a name": (['optimizer.name="torch.optim.AdamW"'], "looks like an import path"),
    "unknown parameter": (["optimizer.lerning_rate=0.1"], "unknown parameter"),
    "quoted number": (['optimizer.lr="0.01"'], "write it without quotes"),
    "wrong type of setting": (['train.epochs="ten"'], "must be a valid integer"),
    "unknown setting": (["train.epoch=3"], "unknown setting"),
    "out of bounds": (["optimizer.lr=-0.1"], "greater than 0"),
    "seed over 32 bits": ([f"train.seed={2**63 - 1}"], "less than or equal to"),
    "value not among the choices": (["train.device=gpu"], "must be 'auto', 'cpu' or 'cuda'"),
    "literal parameter": (["model.name=mlp", "model.activation=relux"], "did you mean 'relu'?"),
    "a list where a number": (["transforms.1.mean=0.5"], "write it as a list"),
    "missing required parameter": (['transforms.1={name="normalize"}'], "required parameter"),
    "missing name": (["model={hidden=1}"], "missing: which model?"),
    "a parameter of another component": (["model.hidden_sizes=[32]"], "unknown parameter for model 'classifier'"),
    "threads zero": (["train.threads=0"], 'must be "auto" or a whole number'),
    "a pair's member out of bounds": (["optimizer.betas=[0.9, 1.5]"], "optimizer.betas.1: must be less than 1"),
    "a pair of three": (["optimizer.betas=[0.9, 0.99, 0.999]"], "optimizer.betas"),
}


def bad_recipe(overrides: list[str]) -> dict[str, Any]:
    data = copy.deepcopy(SUMMARY)
    apply_overrides(data, [parse_override(o) for o in overrides])
    return data


@pytest.mark.parametrize("case", list(BAD))
def test_bad_recipes_are_refused_by_the_schema_and_by_mlrun(validator, registry, case: str) -> None:
    overrides, said = BAD[case]
    data = bad_recipe(overrides)
    assert errors(validator, data), f"the schema accepts: {case}"
    with pytest.raises(UsageError) as info:
        validate_recipe(copy.deepcopy(data), registry, path=Path("bad.toml"))
    assert said in "\n".join(info.value.problems)


@pytest.mark.parametrize("section", ["dataset", "model", "criterion", "optimizer"])
def test_a_missing_required_section_is_refused_unless_the_recipe_extends_another(validator, section: str) -> None:
    data = copy.deepcopy(SUMMARY)
    del data[section]
    assert errors(validator, data) == [f": '{section}' is a required property"]
    # A recipe with bases may leave sections and names to them; what it sets is still checked.
    partial = {"extends": "summary.toml", "optimizer": {"lr": 0.1}, "model": {"name": "mlp", "dropout": 0.5}}
    assert errors(validator, partial) == []
    partial["model"]["dropout"] = 1.5  # a section that names its component gets that one's checks
    assert errors(validator, partial) == ["model.dropout: 1.5 is greater than or equal to the maximum of 1"]
    assert errors(validator, {"extends": 3}), "extends must name files"


def test_transforms_must_be_a_list_of_named_tables(validator) -> None:
    assert errors(validator, bad_recipe(['transforms={name="to_tensor"}']))
    assert errors(validator, bad_recipe(["transforms.1={mean=[0.5]}"]))


def test_the_command_prints_the_schema(capsys) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert set(printed["required"] if "required" in printed else printed["then"]["required"]) == {
        "dataset", "model", "criterion", "optimizer"
    }  # fmt: skip
    jsonschema.Draft7Validator(printed).validate(SUMMARY)
