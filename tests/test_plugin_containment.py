"""Plugins that exit, interrupt, hang or print at import cannot take mlrun down (issue #10)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlrun.plugins import PluginSettings, load_plugins
from mlrun.registry import build_registry

from conftest import RECIPES, run_cli
from plugin_fakes import GOOD_MODEL, install_fake

EXITS = """
import sys
sys.exit(3)
"""

INTERRUPTS = """
raise KeyboardInterrupt
"""

LOOPS = """
while True:
    pass
"""

PRINTS = """
import ctypes, os, sys
from torch import nn
from mlrun import Model, hookimpl

print("python print at import")
os.write(1, b"fd-level write at import\\n")
ctypes.CDLL(None).printf(b"printf at import\\n")  # stays in libc's buffer: stdout is a pipe

@hookimpl
def register_models():
    print("python print in a hook")
    return [Model("chatty", lambda: nn.Flatten(), "a model from a plugin that prints")]
"""

EXIT_IN_HOOK = """
import sys
from mlrun import hookimpl

@hookimpl
def register_models():
    sys.exit("no models today")
"""

LONG_FAILURE = """
raise RuntimeError("{name} cannot start: " + "this dependency is missing; " * 60)
"""

BUILTINS = {"classifier", "fashion_mnist", "adam"}


def _json_outputs(env: dict[str, str]) -> tuple[list[dict], list[dict], str]:
    """``list --json`` and ``plugins --json``, both parsed; and their stderr together."""
    listing = run_cli("list", "--json", env=env)
    plugins = run_cli("plugins", "--json", env=env)
    assert listing.returncode == 0 and plugins.returncode == 0, listing.stderr + plugins.stderr
    return json.loads(listing.stdout), json.loads(plugins.stdout), listing.stderr + plugins.stderr


def _plugin(payload: list[dict], name: str) -> dict:
    return next(p for p in payload if p["name"] == name)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "reason"),
    [(EXITS, "called sys.exit(3) while being imported"),
     (INTERRUPTS, "raised KeyboardInterrupt while being imported")],
    ids=["sys-exit", "keyboard-interrupt"],
)  # fmt: skip
def test_exit_or_interrupt_at_import_fails_only_that_plugin(site: Path, source: str, reason: str) -> None:
    install_fake(site, "mlrun-fake-broken", source)
    install_fake(site, "mlrun-fake-zgood", GOOD_MODEL.format(name="tiny"))  # loaded after the broken one
    env = {"MLRUN_PLUGINS": "mlrun_fake_broken,mlrun_fake_zgood"}
    components, plugins, stderr = _json_outputs(env)
    assert BUILTINS | {"tiny"} <= {c["name"] for c in components}
    broken = _plugin(plugins, "mlrun_fake_broken")
    assert broken["status"] == "failed" and reason in broken["error"]
    assert _plugin(plugins, "mlrun_fake_zgood")["status"] == "ok"
    assert "interrupted" not in stderr
    text = run_cli("list", env=env)
    assert text.returncode == 0 and "classifier" in text.stdout
    assert f"plugin 'mlrun_fake_broken' (mlrun-fake-broken==1.0) failed to load: {reason}" in text.stderr


def test_sys_exit_in_a_hook_fails_only_that_plugin(site: Path) -> None:
    install_fake(site, "mlrun-fake-hookexit", EXIT_IN_HOOK)
    registry = build_registry(load_plugins(PluginSettings(allow=frozenset({"mlrun_fake_hookexit"}))))
    assert registry.plugins.infos["mlrun_fake_hookexit"].error == (
        "called sys.exit('no models today') in register_models()"
    )
    assert "classifier" in registry.names("model")


def _run_with_deadline(args: list[str], env: dict[str, str], deadline_s: float) -> subprocess.CompletedProcess[str]:
    """run_cli with a short timeout: a hanging plugin must fail the test, not stall the suite."""
    return subprocess.run(
        [sys.executable, "-m", "mlrun", *args],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=deadline_s,
    )  # fmt: skip


@pytest.mark.slow
def test_a_plugin_that_loops_at_import_is_reported_then_abandoned(site: Path) -> None:
    install_fake(site, "mlrun-fake-loops", LOOPS)
    env = {"MLRUN_PLUGINS": "mlrun_fake_loops", "MLRUN_PLUGIN_IMPORT_TIMEOUT": "2"}
    started = time.monotonic()
    result = _run_with_deadline(["plugins", "--json"], env, deadline_s=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    assert "loading plugin 'mlrun_fake_loops' (mlrun-fake-loops==1.0) is taking long…" in result.stderr
    plugins = json.loads(result.stdout)
    assert {"mlrun.builtins.models", "mlrun.builtins.datasets"} <= {p["name"] for p in plugins}
    loops = _plugin(plugins, "mlrun_fake_loops")
    assert loops["status"] == "failed" and loops["error"].startswith("import did not finish in 2 s")


@pytest.mark.slow
def test_a_real_ctrl_c_during_a_hanging_import_still_stops_mlrun(site: Path) -> None:
    install_fake(site, "mlrun-fake-loops", LOOPS)
    # Limit 6 s: the notice comes after 3 s, so a contained Ctrl-C would end in exit 0 at 6 s.
    env = {**os.environ, "MLRUN_PLUGINS": "mlrun_fake_loops", "MLRUN_PLUGIN_IMPORT_TIMEOUT": "6"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlrun", "list"], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    watchdog = threading.Timer(60, process.kill)  # readline must not wait forever
    watchdog.start()
    try:
        notice = process.stderr.readline()  # the slow-import notice: the plugin's loop is running
        assert "loading plugin 'mlrun_fake_loops'" in notice
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        watchdog.cancel()
        process.kill()
    assert process.returncode == 130 and "interrupted" in stderr
    assert "classifier" not in stdout


@pytest.mark.slow
def test_plugin_output_never_mixes_with_json(site: Path) -> None:
    install_fake(site, "mlrun-fake-chatty", PRINTS)
    components, plugins, stderr = _json_outputs({"MLRUN_PLUGINS": "mlrun_fake_chatty"})
    assert BUILTINS | {"chatty"} <= {c["name"] for c in components}
    assert _plugin(plugins, "mlrun_fake_chatty")["status"] == "ok"
    for line in ("python print at import", "fd-level write at import", "printf at import",
                 "python print in a hook"):  # fmt: skip
        assert stderr.count(line) == 2, line  # once per command, on stderr


def test_new_plugin_refuses_a_standard_library_name(tmp_path: Path) -> None:
    result = run_cli("new", "plugin", "os", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "standard-library module 'os'" in result.stderr and "e.g. mlrun-os" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_component_lists_failed_plugins_one_short_line_each(site: Path) -> None:
    names = ["mlrun_fake_one", "mlrun_fake_two", "mlrun_fake_three"]
    for name in names:
        install_fake(site, name.replace("_", "-"), LONG_FAILURE.format(name=name))
    result = run_cli("check", str(RECIPES / "summary.toml"), "criterion.name=focal",
                     env={"MLRUN_PLUGINS": ",".join(names)})  # fmt: skip
    assert result.returncode == 2 and "unknown criterion 'focal'" in result.stderr
    lines = result.stderr.splitlines()
    assert max(len(line) for line in lines) <= 200, result.stderr
    for name in names:
        assert sum(f"'{name}' (failed to import: RuntimeError" in line for line in lines) == 1
