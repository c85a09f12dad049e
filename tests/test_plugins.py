"""Third-party plugins: discovery through entry points, and broken plugins that do not break mlrun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mlrun
from mlrun.errors import PluginError
from mlrun.plugins import PluginSettings, load_plugins
from mlrun.registry import LookupProblem, build_registry

from conftest import RECIPES, run_cli
from plugin_fakes import BAD_SIGNATURE, BROKEN_IMPORT, GOOD_MODEL, MISSPELLED_HOOK, RAISING_HOOK, install_fake


def load(allow: set[str], *, strict: bool = False):
    return build_registry(load_plugins(PluginSettings(allow=frozenset(allow), strict=strict)))


def test_entry_point_plugin_is_discovered_with_its_distribution(site: Path) -> None:
    install_fake(site, "mlrun-fake-good", GOOD_MODEL.format(name="tiny"), version="2.3")
    registry = load({"mlrun_fake_good"})
    entry = registry.get("model", "tiny")
    assert entry.plugin.label == "mlrun-fake-good==2.3"
    assert registry.plugins.infos["mlrun_fake_good"].hooks == ["register_models"]


def test_allow_list_matches_distribution_names_too(site: Path) -> None:
    install_fake(site, "mlrun-fake-good", GOOD_MODEL.format(name="tiny"))
    assert "tiny" in load({"mlrun-fake-good"}).names("model")
    assert "tiny" not in load({"something-else"}).names("model")


def test_autoload_can_be_turned_off(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake(site, "mlrun-fake-good", GOOD_MODEL.format(name="tiny"))
    monkeypatch.delenv("MLRUN_PLUGINS")
    assert "tiny" in mlrun.default_registry().names("model")
    monkeypatch.setenv("MLRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "tiny" not in mlrun.default_registry().names("model")
    assert "tiny" in mlrun.default_registry(autoload=True).names("model")  # the argument wins


@pytest.mark.parametrize(
    ("source", "reason"),
    [(BROKEN_IMPORT, "failed to import: ModuleNotFoundError at {site}/mlrun_fake_broken.py:2: "
                     "No module named 'torchx_does_not_exist'"),
     (RAISING_HOOK, "register_criteria() raised RuntimeError at {site}/mlrun_fake_broken.py:6: focal needs a GPU"),
     (BAD_SIGNATURE, "invalid hook implementation"),
     (MISSPELLED_HOOK, "unknown hook(s) register_model")],
    ids=["import-error", "hook-raises", "bad-signature", "misspelled-hook"],
)  # fmt: skip
def test_broken_plugin_is_reported_not_fatal(site: Path, source: str, reason: str) -> None:
    install_fake(site, "mlrun-fake-broken", source)
    install_fake(site, "mlrun-fake-good", GOOD_MODEL.format(name="tiny"))
    registry = load({"mlrun_fake_broken", "mlrun_fake_good"})
    info = registry.plugins.infos["mlrun_fake_broken"]
    assert not info.ok and reason.format(site=site) in info.error
    assert "tiny" in registry.names("model") and "classifier" in registry.names("model")
    with pytest.raises(LookupProblem, match="'mlrun_fake_broken'"):
        registry.get("criterion", "focal")
    with pytest.raises(PluginError, match="mlrun_fake_broken"):
        load({"mlrun_fake_broken"}, strict=True)


@pytest.mark.slow
def test_cli_keeps_working_with_a_broken_plugin(site: Path) -> None:
    install_fake(site, "mlrun-fake-broken", BROKEN_IMPORT)
    env = {"MLRUN_PLUGINS": "mlrun_fake_broken"}
    listing = run_cli("list", env=env)
    assert listing.returncode == 0 and "classifier" in listing.stdout
    assert "plugin 'mlrun_fake_broken' (mlrun-fake-broken==1.0) failed to load" in listing.stderr
    plugins = run_cli("plugins", "--json", env=env)
    assert plugins.returncode == 0
    broken = next(p for p in json.loads(plugins.stdout) if p["name"] == "mlrun_fake_broken")
    assert broken["status"] == "failed" and "torchx_does_not_exist" in broken["error"]
    recipe = run_cli("check", str(RECIPES / "summary.toml"), "criterion.name=focal", env=env)
    assert recipe.returncode == 2 and "'mlrun_fake_broken' (failed to import" in recipe.stderr
    strict = run_cli("--strict-plugins", "list", env=env)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert "plugin 'mlrun_fake_broken' (mlrun-fake-broken==1.0) failed" in strict.stderr


def test_duplicate_names_across_distributions_name_both(site: Path) -> None:
    install_fake(site, "mlrun-fake-alpha", GOOD_MODEL.format(name="twin"))
    install_fake(site, "mlrun-fake-beta", GOOD_MODEL.format(name="twin"))
    registry = load({"mlrun_fake_alpha", "mlrun_fake_beta"})
    with pytest.raises(LookupProblem) as info:
        registry.get("model", "twin")
    assert "mlrun-fake-alpha==1.0" in str(info.value) and "mlrun-fake-beta==1.0" in str(info.value)
    assert 'name = "mlrun-fake-alpha:twin" or name = "mlrun-fake-beta:twin"' in str(info.value)
    listing = run_cli("list", "model", env={"MLRUN_PLUGINS": "mlrun_fake_alpha,mlrun_fake_beta"})
    rows = [line.split()[:3] for line in listing.stdout.splitlines() if "twin" in line]
    assert rows == [["model", "mlrun-fake-alpha:twin", "mlrun-fake-alpha==1.0"],
                    ["model", "mlrun-fake-beta:twin", "mlrun-fake-beta==1.0"]]  # fmt: skip
    # A clash is contained, not a load failure: strict mode loads both.
    strict = load({"mlrun_fake_alpha", "mlrun_fake_beta"}, strict=True)
    assert strict.get("model", "mlrun_fake_beta:twin").plugin.distribution == "mlrun-fake-beta"


def test_plugins_command_shows_builtins_and_third_party_side_by_side(site: Path) -> None:
    install_fake(site, "mlrun-fake-good", GOOD_MODEL.format(name="tiny"))
    result = run_cli("plugins", env={"MLRUN_PLUGINS": "mlrun_fake_good"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "FROM", "HOOKS", "COMPONENTS", "STATUS"]
    assert any(line.split()[:2] == ["mlrun.builtins.models", "built-in"] for line in lines)
    fake = next(line for line in lines if line.startswith("mlrun_fake_good"))
    assert fake.split() == ["mlrun_fake_good", "mlrun-fake-good==1.0", "register_models", "1", "model", "ok"]
