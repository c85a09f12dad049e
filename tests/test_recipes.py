"""Every shipped recipe is valid and says how to run it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlrun.recipe import load_recipe

from conftest import RECIPES

BUILTIN_ONLY = sorted(p for p in RECIPES.glob("*.toml") if p.stem != "convnet")


def test_there_is_a_recipe_per_notes_model(registry) -> None:
    models = {load_recipe(p, registry).model.component.name for p in BUILTIN_ONLY}
    assert {"sequential", "sequential_log_softmax", "classifier", "network_alternative", "mlp"} <= models


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_recipe_starts_with_its_run_command(path: Path) -> None:
    assert path.read_text().splitlines()[0] == f"# Run: mlrun recipes/{path.name}"


@pytest.mark.parametrize("path", BUILTIN_ONLY, ids=lambda p: p.name)
def test_builtin_recipe_is_valid_without_warnings(registry, path: Path) -> None:
    recipe = load_recipe(path, registry)
    assert recipe.warnings == []
