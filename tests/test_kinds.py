"""Kinds are data: a plugin adds a kind of its own with no engine file edited (issue #12)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from mlrun import Component, Dataset, Model
from mlrun.components import BUILTIN_KINDS, kind_problem

from conftest import RECIPES, run_cli, write_recipe
from plugin_fakes import install_fake

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# A whole new kind in one plugin module: its descriptor (naming its hook), one component.
WIDGET_PLUGIN = """
from dataclasses import dataclass
from typing import Annotated, ClassVar

from annotated_types import Gt

from mlrun import Component, hookimpl


@dataclass(frozen=True)
class Widget(Component):
    kind: ClassVar[str] = "widget"
    hook: ClassVar[str] = "register_widgets"
    section: ClassVar[str] = "widgets"
    many: ClassVar[bool] = True
    required: ClassVar[bool] = False


def gear(*, teeth: Annotated[int, Gt(0)] = 12) -> dict:
    return {"teeth": teeth}


@hookimpl
def register_kinds():
    return [Widget]


@hookimpl
def register_widgets():
    return [Widget("gear", gear, "a toothed wheel")]
"""


@pytest.fixture
def widget_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    install_fake(site, "mlrun-widgets", WIDGET_PLUGIN)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "MLRUN_DISABLE_PLUGIN_AUTOLOAD": "0"}


def test_a_plugin_kind_is_listed_with_its_component(widget_env: dict[str, str]) -> None:
    listing = run_cli("list", "--json", env=widget_env)
    assert listing.returncode == 0, listing.stderr
    widgets = [e for e in json.loads(listing.stdout) if e["kind"] == "widget"]
    assert [(w["name"], w["plugin"]) for w in widgets] == [("gear", "mlrun-widgets==1.0")]
    assert widgets[0]["parameters"][0]["name"] == "teeth"
    plugins = json.loads(run_cli("plugins", "--json", env=widget_env).stdout)
    (mine,) = [p for p in plugins if p["name"] == "mlrun_widgets"]
    assert mine["status"] == "ok" and set(mine["hooks"]) == {"register_kinds", "register_widgets"}


def test_a_plugin_kind_has_a_validated_recipe_section(widget_env: dict[str, str], tmp_path: Path) -> None:
    base = (RECIPES / "summary.toml").read_text()
    good = write_recipe(tmp_path / "good.toml", base + '\n[[widgets]]\nname = "gear"\nteeth = 30\n')
    checked = run_cli("check", str(good), env=widget_env)
    assert checked.returncode == 0, checked.stderr
    resolved = tomllib.loads(checked.stdout.split("\n", 1)[1])
    assert resolved["widgets"] == [{"name": "gear", "teeth": 30}]  # the resolved recipe keeps it

    bad = write_recipe(
        tmp_path / "bad.toml", base + '\n[[widgets]]\nname = "geer"\n\n[[widgets]]\nname = "gear"\nteeth = 0\n'
    )
    refused = run_cli("check", str(bad), env=widget_env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "widgets.0.name: unknown widget 'geer' — did you mean 'gear'?" in refused.stderr
    assert "widgets.1.teeth:" in refused.stderr and "greater than 0" in refused.stderr


def test_without_the_plugin_its_section_is_unknown(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "r.toml", (RECIPES / "summary.toml").read_text() + '\n[[widgets]]\nname = "gear"\n'
    )
    result = run_cli("check", str(recipe))
    assert result.returncode == 2 and "widgets: unknown section" in result.stderr


def test_an_unsound_kind_fails_only_its_plugin(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_fake(
        site,
        "mlrun-nohook",
        WIDGET_PLUGIN.replace('section: ClassVar[str] = "widgets"', 'section: ClassVar[str] = "model"'),
    )
    env = {
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "MLRUN_DISABLE_PLUGIN_AUTOLOAD": "0",
    }
    plugins = json.loads(run_cli("plugins", "--json", env=env).stdout)
    (mine,) = [p for p in plugins if p["name"] == "mlrun_nohook"]
    assert mine["status"] == "failed"
    assert "section [model] is already taken" in mine["error"]
    assert run_cli("check", str(RECIPES / "summary.toml"), env=env).returncode == 0  # the rest works


def test_the_built_in_kinds_are_sound_declarations() -> None:
    known: dict[str, type[Component]] = {}
    for cls in BUILTIN_KINDS:
        assert kind_problem(cls, known) is None, cls
        known[cls.kind] = cls
    assert [cls.section for cls in BUILTIN_KINDS] == [
        "dataset",
        "transforms",
        "model",
        "criterion",
        "optimizer",
        "scheduler",
        "metrics",
        "callbacks",
    ]


@pytest.mark.parametrize(
    ("declaration", "problem"),
    [
        (Model, "kind 'model' is already declared"),
        (type("Loose", (), {}), "must be a subclass of mlrun.Component"),
        (
            type("Bad", (Dataset,), {"kind": "bad", "hook": "Register Bad", "section": "bads"}),
            "hook must be a lowercase name",
        ),
        (
            type("Clash", (Dataset,), {"kind": "clash", "hook": "register_clash", "section": "train"}),
            "[train] is already taken",
        ),
    ],
)
def test_unsound_kind_declarations_are_named(declaration: type, problem: str) -> None:
    known = {cls.kind: cls for cls in BUILTIN_KINDS}
    if declaration is Model:
        declaration = type("Model2", (Model,), {"hook": "register_models2", "section": "model2"})
    message = kind_problem(declaration, known)
    assert message is not None and problem in message, message
