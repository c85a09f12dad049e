"""The suite's own rules (tests/conftest.py): real-data tests skip without the data, except in CI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mlrun.data

import conftest


@pytest.fixture
def no_real_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine without Debian's dataset-fashion-mnist."""
    monkeypatch.setattr(mlrun.data, "find_system_copy", lambda spec: None)


def test_without_the_data_a_real_data_test_skips_with_the_reason(no_real_data, monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="the real Fashion-MNIST is not installed: run `make test`"):
        conftest.require_real_fashion_mnist()


@pytest.mark.parametrize("value", ["true", "1"])
def test_without_the_data_a_real_data_test_fails_in_ci(no_real_data, monkeypatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI=true: real-data tests must run in CI"):
        conftest.require_real_fashion_mnist()


def test_ci_false_is_not_ci(no_real_data, monkeypatch) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        conftest.require_real_fashion_mnist()


def test_with_the_data_the_folder_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(mlrun.data, "find_system_copy", lambda spec: tmp_path)
    monkeypatch.setenv("CI", "true")
    assert conftest.require_real_fashion_mnist() == tmp_path


@pytest.mark.real_data
def test_a_real_data_test_runs_only_when_the_data_is_there() -> None:
    from mlrun.builtins.datasets import FASHION_MNIST

    # conftest's autouse check ran before this body: reaching it means the data is installed
    assert mlrun.data.find_system_copy(FASHION_MNIST) is not None


@pytest.mark.slow
def test_the_real_data_tests_skip_here_and_fail_in_ci_without_the_data(tmp_path: Path) -> None:
    """The whole wiring: pytest on tests/test_real_data.py, with a plugin that hides the data."""
    (tmp_path / "hide_real_data.py").write_text("import mlrun.data\nmlrun.data.find_system_copy = lambda spec: None\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    command = [sys.executable, "-m", "pytest", "-p", "hide_real_data", "-p", "no:cacheprovider", "-rsf",
               str(conftest.REPO / "tests" / "test_real_data.py")]  # fmt: skip
    env.pop("CI", None)
    here = subprocess.run(command, capture_output=True, text=True, env=env, cwd=conftest.REPO, timeout=300)
    assert here.returncode == 0, here.stdout + here.stderr
    # every test of the file skipped (the summary line names nothing else), with the reason
    assert re.search(r"=+ \d+ skipped in [\d.]+s =+$", here.stdout, flags=re.M), here.stdout
    assert "the real Fashion-MNIST is not installed" in here.stdout
    ci = subprocess.run(command, capture_output=True, text=True, env={**env, "CI": "true"}, cwd=conftest.REPO,
                        timeout=300)  # fmt: skip
    assert ci.returncode == 1, ci.stdout + ci.stderr
    assert re.search(r"=+ \d+ errors? in [\d.]+s =+$", ci.stdout, flags=re.M), ci.stdout  # none skipped
    assert "real-data tests must run in CI" in ci.stdout


def test_the_markers_are_registered(pytestconfig: pytest.Config) -> None:
    """--strict-markers is on: an unregistered marker is an error, so both must be declared."""
    declared = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert {"slow", "real_data"} <= declared
    assert "--strict-markers" in pytestconfig.getini("addopts")
