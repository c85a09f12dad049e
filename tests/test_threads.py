"""train.threads: validated, applied while training, recorded in run.json, given back afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from mlrun import engine
from mlrun.errors import MlrunError, UsageError
from mlrun.recipe import load_recipe
from mlrun.settings import AUTO_THREADS, TrainSettings, resolve_threads

from conftest import QUIET, REPO


@pytest.fixture
def outside_threads() -> Iterator[int]:
    """The caller's own thread count (3: unlike both 1 and 2), put back after the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


@pytest.fixture
def threads_at_each_step() -> Iterator[list[int]]:
    """torch.get_num_threads() after every optimizer step of any optimizer."""
    seen: list[int] = []
    handle = register_optimizer_step_post_hook(lambda *_: seen.append(torch.get_num_threads()))
    yield seen
    handle.remove()


@pytest.mark.parametrize("value", ["0", "-1", "-8", "2.5", "true", '"many"', '"2"'])
def test_a_thread_count_below_one_or_not_a_whole_number_is_refused(registry, small_recipe: Path, value: str) -> None:
    with pytest.raises(UsageError) as refused:
        load_recipe(small_recipe, registry, [f"train.threads={value}"])
    (problem,) = refused.value.problems
    assert 'train.threads: must be "auto" or a whole number of threads, 1 or more, got ' in problem


def test_auto_is_the_default_and_resolves_to_the_documented_count(registry, small_recipe: Path) -> None:
    assert TrainSettings().threads == "auto"
    assert load_recipe(small_recipe, registry).train.threads == "auto"
    assert resolve_threads("auto") == AUTO_THREADS == 1
    assert resolve_threads(4) == 4
    performance = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    assert f'`train.threads = "auto"` gives {AUTO_THREADS} thread' in performance


@pytest.mark.parametrize(("setting", "expected"), [("auto", AUTO_THREADS), ("2", 2)])
def test_the_run_trains_on_its_threads_records_them_and_gives_the_old_count_back(
    registry, small_recipe: Path, outside_threads: int, threads_at_each_step: list[int], setting: str, expected: int
) -> None:
    recipe = load_recipe(small_recipe, registry, ["train.epochs=1", f"train.threads={setting}"])
    result = engine.run(recipe, **QUIET)
    assert threads_at_each_step and set(threads_at_each_step) == {expected}
    status = json.loads((result.folder.path / "run.json").read_text())
    assert status["threads"] == expected and status["status"] == "completed"
    assert torch.get_num_threads() == outside_threads
    assert "threads = " in (result.folder.path / "recipe.toml").read_text()  # the setting is in the resolved recipe


def test_the_old_count_is_given_back_when_training_fails(
    registry, small_recipe: Path, outside_threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_step(*_: object) -> None:
        assert torch.get_num_threads() == 2
        raise RuntimeError("broken on purpose")

    handle = register_optimizer_step_post_hook(broken_step)
    try:
        with pytest.raises(MlrunError, match="broken on purpose"):
            engine.run(load_recipe(small_recipe, registry, ["train.threads=2"]), **QUIET)
    finally:
        handle.remove()
    assert torch.get_num_threads() == outside_threads
