"""Shell completion (issue #17): the completer called in-process, as the shell would call it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlrun import catalog
from mlrun.cli import build_parser, main
from mlrun.cli.completion import completions

from conftest import RECIPES, REPO, write_recipe

SUMMARY = str(RECIPES / "summary.toml")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The completion catalog is cached in the test's own folder, never in the user's."""
    monkeypatch.setenv(catalog.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def complete(line: str) -> list[str]:
    return [c.rstrip() for c in completions(build_parser(), line)]


def test_override_keys_complete_from_the_recipe_and_its_components() -> None:
    assert complete(f"mlrun {SUMMARY} optimizer.l") == ["optimizer.lr="]  # the example
    assert complete(f"mlrun run {SUMMARY} optimizer.") == [
        "optimizer.name=", "optimizer.lr=", "optimizer.betas=", "optimizer.eps=", "optimizer.weight_decay=",
        "optimizer.fused=", "optimizer.decay_bias_and_norm=",
    ]  # fmt: skip
    assert complete(f"mlrun check {SUMMARY} transforms.1.") == [
        "transforms.1.name=", "transforms.1.mean=", "transforms.1.std="
    ]  # fmt: skip
    assert "train.val_fraction=" in complete(f"mlrun {SUMMARY} train.v")
    assert complete(f"mlrun {SUMMARY} scheduler.") == ["scheduler.name="]  # no scheduler chosen yet


def test_the_component_chosen_on_the_line_gives_its_parameters() -> None:
    assert complete(f"mlrun {SUMMARY} model.hid") == []  # 'classifier' has no hidden sizes
    assert complete(f"mlrun {SUMMARY} model.name=mlp train.epochs=1 model.hid") == ["model.hidden_sizes="]
    assert complete(f"mlrun {SUMMARY} model.name=mlp model.activation=") == [
        "model.activation=relu", "model.activation=tanh", "model.activation=sigmoid", "model.activation=gelu"
    ]  # fmt: skip


def test_values_complete_after_the_equals_sign() -> None:
    names = complete(f"mlrun {SUMMARY} optimizer.name=")
    assert {"optimizer.name=adam", "optimizer.name=sgd"} <= set(names)
    assert complete(f"mlrun {SUMMARY} train.device=c") == ["train.device=cpu", "train.device=cuda"]
    assert complete(f"mlrun {SUMMARY} train.shuffle=") == ["train.shuffle=true", "train.shuffle=false"]
    assert complete(f"mlrun {SUMMARY} optimizer.lr=") == []  # a number: nothing to offer


def test_overrides_and_options_may_stand_anywhere(tmp_path: Path) -> None:
    assert complete(f"mlrun {SUMMARY} --data {tmp_path} train.ep") == ["train.epochs="]
    assert complete(f"mlrun --debug check --data {tmp_path} {SUMMARY} optimizer.lr=0.1 train.ep") == ["train.epochs="]
    assert complete(f"mlrun check {SUMMARY} --ex") == ["--explain"]


def test_keys_of_a_recipe_that_extends_another(tmp_path: Path) -> None:
    write_recipe(tmp_path / "base.toml", (RECIPES / "mlp.toml").read_text())
    write_recipe(tmp_path / "child.toml", 'extends = "base.toml"\n[train]\nepochs = 1\n')
    assert "model.dropout=" in complete("mlrun check child.toml model.")
    assert complete("mlrun child.toml criterion.l") == ["criterion.label_smoothing="]


def test_resume_completes_the_run_folders_recipe(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "summary-20261201-000000"
    run.mkdir(parents=True)
    write_recipe(run / "recipe.toml", (RECIPES / "summary.toml").read_text())
    assert complete(f"mlrun resume {run} optimizer.l") == ["optimizer.lr="]


def test_commands_recipe_paths_and_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert complete("mlrun ch") == ["check"]
    first = complete("mlrun ")
    assert {"run", "check", "list", "schema", "recipes/"} <= set(first)
    assert complete("mlrun rec") == ["recipes/"]  # `mlrun RECIPE` runs it: paths complete at once
    assert "recipes/summary_val.toml" in complete("mlrun check recipes/summ")
    assert complete("mlrun list ") == [
        "dataset", "transform", "model", "criterion", "optimizer", "scheduler", "metric", "callback"
    ]  # fmt: skip
    assert complete("mlrun list sch") == ["scheduler"]


def test_the_catalog_is_cached_and_follows_the_installed_plugins(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = catalog.load_catalog()
    assert len(list(cache.glob("completion-*.json"))) == 1

    def no_registry(**_: object) -> None:
        raise AssertionError("the registry was built again")

    monkeypatch.setattr("mlrun.api.default_registry", no_registry)
    assert catalog.load_catalog() == built  # from the cache: no plugin imported, no torch
    before = catalog.fingerprint()
    monkeypatch.setenv("MLRUN_PLUGINS", "convnet")
    assert catalog.fingerprint() != before  # other plugins: another catalog


def test_the_shell_protocol_answers_without_importing_torch(tmp_path: Path, cache: Path) -> None:
    """`mlrun` as the shell runs it (argcomplete's environment variables), with the catalog cached."""
    catalog.load_catalog()
    out = tmp_path / "completions"
    line = f"mlrun {SUMMARY} optimizer.l"
    env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}  # fmt: skip
    code = "import sys\nfrom mlrun.cli import main\ntry:\n    main()\nfinally:\n    print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "optimizer.lr="
    assert result.stdout == "False\n"


def test_main_answers_a_completion_request_and_exits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "completions"
    line = "mlrun list mo"
    for name, value in {"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
                        "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    assert out.read_text() == "model "


def test_a_command_that_loads_the_plugins_caches_the_catalog_for_the_next_completion(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["list"]) == 0
    assert len(list(cache.glob(f"{catalog.PREFIX}*.json"))) == 1
    import mlrun.api

    def no_plugin_loading() -> None:
        raise AssertionError("the completion loaded the plugins instead of reading the cached catalog")

    monkeypatch.setattr(mlrun.api, "default_registry", no_plugin_loading)
    assert complete(f"mlrun {SUMMARY} optimizer.l") == ["optimizer.lr="]
