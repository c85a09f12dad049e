"""A plugin author's mistakes, each caught when the plugin loads and explained where the user looks (issue #11).

Each test drives the command line in-process, as a user would meet the mistake, and
checks that the message says what is wrong and how to fix it, the exit code, and
that no traceback shows without --debug.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlrun.cli import main
from mlrun.plugins import PluginSettings, load_plugins
from mlrun.registry import build_registry

from conftest import RECIPES
from plugin_fakes import install_fake

LENET = "mlrun-fake-lenet"
LENET_MODULE = "mlrun_fake_lenet"

HEADER = """
import json
from typing import Annotated, Literal

import torch
from annotated_types import Gt
from torch import nn

from mlrun import Criterion, Dataset, Model, Optimizer, Scheduler, Transform, hookimpl


def lenet5(width: Annotated[int, Gt(0)] = 8) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))


def poly1(epsilon: float = 1.0):
    return nn.CrossEntropyLoss()


def lion(*, params, lr: Annotated[float, Gt(0)] = 0.01) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr)


def erase(p: Annotated[float, Gt(0)] = 0.5):
    return lambda sample: sample
"""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``mlrun ARGS`` in-process; returns (exit code, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run a command that must fail as bad input (exit 2, no traceback); returns stderr."""
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def plugin_row(capsys: pytest.CaptureFixture[str], name: str = LENET_MODULE) -> dict:
    """This plugin's object from ``mlrun plugins --json``."""
    code, out, err = cli(capsys, "plugins", "--json")
    assert code == 0, err
    return next(p for p in json.loads(out) if p["name"] == name)


@pytest.fixture
def lenet(site: Path, monkeypatch: pytest.MonkeyPatch):
    """Install a fake plugin ``mlrun-fake-lenet`` 0.1.0 from the given hook code, and allow it."""

    def install(hooks: str, **options: str) -> Path:
        monkeypatch.setenv("MLRUN_PLUGINS", LENET_MODULE)
        return install_fake(site, LENET, HEADER + hooks, version="0.1.0", **options)

    return install


# 1. A typo in a descriptor field: the component is refused at load, its siblings load.
def test_a_descriptor_typo_refuses_that_component_only(capsys, lenet, small_recipe: Path) -> None:
    lenet("""
@hookimpl
def register_models():
    return [Model("lenet5", lenet5, "LeNet-5", output="logit"), Model("lenet_ok", lenet5, "LeNet-5 done right")]
""")
    row = plugin_row(capsys)
    assert row["status"] == "partly loaded" and row["components"] == {"model": 1}
    assert row["problems"] == [
        "register_models(): model 'lenet5' refused: output 'logit' is not one of 'logits', 'log_probs', 'probs' — "
        "did you mean 'logits'?; for a model whose output is configurable, name the factory parameter that chooses it"
    ]
    err = refused(capsys, "check", str(small_recipe), "model.name=lenet5")
    assert "KeyError" not in err
    assert "unknown model 'lenet5'" in err
    assert "note: model 'lenet5' of plugin 'mlrun_fake_lenet' (mlrun-fake-lenet==0.1.0) was refused when it loaded:\n" \
           "      output 'logit' is not one of" in err  # fmt: skip
    code, out, err = cli(capsys, "check", str(small_recipe), "model.name=lenet_ok", "criterion.name=cross_entropy")
    assert code == 0, err
    assert 'name = "lenet_ok"' in out


# Every descriptor field of every kind is checked; each case is one refused component.
@pytest.mark.parametrize(
    ("descriptor", "expected"),
    [('Dataset("digits", lambda *, train, transform: [], "d", classes=("a", 3))', "classes must be a tuple of class names"),
     ('Dataset("digits", lambda *, train, transform: [], "d", channels=0)', "channels must be a positive integer"),
     ('Dataset("digits", lambda *, train, transform: [], "d", tensors="fast")', "tensors must be a function"),
     ('Dataset("digits", lambda *, train, transform: [], "d", tensors=lambda: 1)', "tensors must take one argument"),
     ('Transform("erase", erase, "e", random="yes")', "random must be True or False, got 'yes'"),
     ('Transform("erase", erase, "e", per_channel=("q",))', "per_channel names 'q', which is not a parameter"),
     ('Transform("erase", erase, "e", batch=lambda: None)', "batch must take the same parameters as the factory (p)"),
     ('Model("lenet5", lenet5, "m", output="width")', "output names the factory parameter 'width', which must be annotated Literal"),
     ('Model("lenet5", lenet5, "m", output=3)', "output must be one of"),
     ('Criterion("poly1", poly1, "c", expects="logits")', "expects must be a tuple of model outputs, e.g. expects=('logits',)"),
     ('Criterion("poly1", poly1, "c", expects=("logit",))', "expects 'logit', which is not one of 'logits', 'log_probs', 'probs' — did you mean 'logits'?"),
     ('Criterion("poly1", lambda epsilon: None, "c")', "parameter 'epsilon' has no type annotation"),
     ('Optimizer("lion", erase, "o")', "must accept the engine-supplied argument(s) params"),
     ('Optimizer("lion", lion, "o", validate=lambda: None)', "validate must take one argument"),
     ('Optimizer("Lion", lion, "o")', "invalid name 'Lion': use lowercase letters"),
     ('Optimizer("lion", lion, "")', "summary must be a non-empty string"),
     ('Scheduler("warm", lambda *, optimizer: None, "s", interval="epochs")', "interval must be 'step' or 'epoch', got 'epochs' — did you mean 'epoch'?"),
     ('Scheduler("warm", lambda *, optimizer: None, "s", interval="epoch", monitor=True)', "monitor=True needs a factory parameter 'monitor'")],
)  # fmt: skip
def test_every_descriptor_field_is_checked_at_load(lenet, descriptor: str, expected: str) -> None:
    kind = descriptor.split("(")[0]
    hook, sibling = SIBLINGS[kind]
    lenet(f"""
@hookimpl
def {hook}():
    return [{descriptor}, {sibling}]
""")
    registry = build_registry(load_plugins(PluginSettings(allow=frozenset({LENET_MODULE}))))
    info = registry.plugins.infos[LENET_MODULE]
    assert info.status == "partly loaded", info
    (problem,) = [p.text for p in info.problems]
    assert problem.startswith(f"{hook}(): {kind.lower()} ") and expected in problem, problem
    sibling_name = sibling.split('"')[1]
    assert registry.get(kind.lower(), sibling_name).plugin is info  # the plugin's other components load


#: Per kind: its hook, and a sound descriptor returned beside the faulty one.
SIBLINGS = {
    "Dataset": ("register_datasets", 'Dataset("digits_ok", lambda *, train, transform: [], "fine")'),
    "Transform": ("register_transforms", 'Transform("erase_ok", erase, "fine")'),
    "Model": ("register_models", 'Model("lenet_ok", lenet5, "fine")'),
    "Criterion": ("register_criteria", 'Criterion("poly1_ok", poly1, "fine")'),
    "Optimizer": ("register_optimizers", 'Optimizer("lion_ok", lion, "fine")'),
    "Scheduler": ("register_schedulers", 'Scheduler("warm_ok", lambda *, optimizer: None, "fine")'),
}


# 2. A hook that raises: reported with the plugin's own file and line; its other hooks still load.
RAISING = """
def _settings():
    return json.loads("{broken")  # the innermost frame is in json; this line is the plugin's


@hookimpl
def register_models():
    return [Model("lenet5", lenet5, "LeNet-5", output=_settings()["output"])]


@hookimpl
def register_criteria():
    return [Criterion("poly1", poly1, "Poly-1 loss")]
"""


def test_a_failing_hook_names_the_plugins_file_and_line(capsys, lenet) -> None:
    module = lenet(RAISING)
    line = next(n for n, text in enumerate(module.read_text().splitlines(), 1) if "json.loads" in text)
    expected = f"register_models() raised JSONDecodeError at {module}:{line}: Expecting property name"
    row = plugin_row(capsys)
    assert row["status"] == "partly loaded" and row["components"] == {"criterion": 1}
    assert row["problems"][0].startswith(expected)
    err = refused(capsys, "--strict-plugins", "list")
    assert f"plugin 'mlrun_fake_lenet' (mlrun-fake-lenet==0.1.0) partly loaded: {expected}" in err
    code, _, err = cli(capsys, "--debug", "plugins")
    assert code == 0
    assert "Traceback (most recent call last)" in err and f'File "{module}", line {line}, in _settings' in err


def test_a_failing_factory_names_the_plugins_file_and_line(capsys, lenet, small_recipe: Path) -> None:
    module = lenet("""
def broken(width: int = 8) -> nn.Module:
    return nn.Linear(784, width // 0)


@hookimpl
def register_models():
    return [Model("lenet5", broken, "LeNet-5")]
""")
    line = next(n for n, text in enumerate(module.read_text().splitlines(), 1) if "width // 0" in text)
    code, _, err = cli(capsys, "run", str(small_recipe), "model.name=lenet5", "criterion.name=cross_entropy")
    assert code == 1 and "Traceback" not in err
    assert (f"could not build model 'lenet5' (from mlrun-fake-lenet==0.1.0): ZeroDivisionError at {module}:{line}: "
            "integer division or modulo by zero") in err  # fmt: skip


# 3. A third-party component with a built-in's name is refused; the built-in keeps working.
def test_a_builtin_name_is_reserved(capsys, lenet, idx_root: Path) -> None:
    lenet("""
@hookimpl
def register_optimizers():
    return [Optimizer("adam", lion, "an adam of our own"), Optimizer("lion", lion, "Lion")]
""")
    row = plugin_row(capsys)
    assert row["status"] == "partly loaded" and row["components"] == {"optimizer": 1}
    assert row["problems"] == [
        "register_optimizers(): optimizer 'adam' refused: 'adam' is the name of a built-in optimizer, and built-in "
        "names are reserved: rename it (e.g. 'fake_lenet_adam')"
    ]
    code, out, err = cli(capsys, "list", "optimizer", "--json")
    assert code == 0
    adams = [e for e in json.loads(out) if e["name"] == "adam"]
    assert [e["plugin"] for e in adams] == ["built-in"]
    assert "is partly loaded; refused:" in err and "rename it" in err
    code, out, err = cli(capsys, "check", str(RECIPES / "summary.toml"), "--data", str(idx_root))
    assert code == 0, err
    assert '[optimizer]\nname = "adam"' in out


# 4. Two third-party plugins give the same name: the plain name asks which; a qualified name picks one.
LION = """
@hookimpl
def register_optimizers():
    return [Optimizer("lion", lion, "Lion from {dist}")]

@hookimpl
def register_transforms():
    return [Transform("erase", erase, "random erasing from {dist}", random=True)]
"""


def _lion_plugins(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for dist in ("mlrun-fake-alpha", "mlrun-fake-beta"):
        install_fake(site, dist, HEADER + LION.format(dist=dist))
    monkeypatch.setenv("MLRUN_PLUGINS", "mlrun_fake_alpha,mlrun-fake-beta")


def test_a_clash_between_plugins_is_resolved_by_a_qualified_name(capsys, site, monkeypatch, small_recipe) -> None:
    _lion_plugins(site, monkeypatch)
    err = refused(capsys, "check", str(small_recipe), "optimizer.name=lion")
    assert ("optimizer.name: optimizer 'lion' is provided by 2 plugins, 'mlrun_fake_alpha' (mlrun-fake-alpha==1.0) "
            "and 'mlrun_fake_beta' (mlrun-fake-beta==1.0): pick one with name = \"mlrun-fake-alpha:lion\" or "
            "name = \"mlrun-fake-beta:lion\"") in err  # fmt: skip
    code, out, err = cli(capsys, "check", str(small_recipe), "optimizer.name=Mlrun_Fake_Beta:lion")
    assert code == 0, err
    assert '[optimizer]\nname = "mlrun-fake-beta:lion"' in out  # recorded canonically in the resolved recipe
    code, out, _ = cli(capsys, "list", "optimizer", "--json")
    lions = [(e["use_as"], e["clashes_with"]) for e in json.loads(out) if e["name"] == "lion"]
    assert lions == [
        ("mlrun-fake-alpha:lion", ["mlrun-fake-beta:lion"]),
        ("mlrun-fake-beta:lion", ["mlrun-fake-alpha:lion"]),
    ]
    code, out, _ = cli(capsys, "list", "transform", "--json")
    erase = next(e for e in json.loads(out) if e["use_as"] == "mlrun-fake-alpha:erase")
    assert (erase["random"], erase["batch"], erase["per_channel"]) == (True, False, [])


def test_a_qualified_name_is_recorded_so_the_run_resumes(capsys, site, monkeypatch, small_recipe: Path) -> None:
    _lion_plugins(site, monkeypatch)
    (small_recipe.parent / "lion.toml").write_text(
        small_recipe.read_text().replace('name = "adam"', 'name = "mlrun-fake-beta:lion"')
        + '\n[[transforms]]\nname = "mlrun_fake_alpha:erase"\n'  # the entry-point name works too
    )
    code, _, err = cli(capsys, "run", str(small_recipe.parent / "lion.toml"), "train.epochs=1", "train.threads=1")
    assert code == 0, err
    (folder,) = Path("runs").iterdir()
    saved = (folder / "recipe.toml").read_text()
    assert 'name = "mlrun-fake-beta:lion"' in saved and 'name = "mlrun-fake-alpha:erase"' in saved
    assert json.loads((folder / "run.json").read_text())["versions"]["mlrun-fake-beta"] == "1.0"
    code, out, err = cli(capsys, "resume", str(folder), "train.epochs=2", "--force")
    assert code == 0, err
    assert "resuming at epoch" in out


# 5. Every "unknown component" explains itself.
LENET_MODELS = """
@hookimpl
def register_models():
    return [Model("lenet5", lenet5, "LeNet-5")]
"""


def test_unknown_names_the_plugin_mlrun_plugins_leaves_out(capsys, lenet, site, monkeypatch, small_recipe) -> None:
    lenet(LENET_MODELS)
    install_fake(site, "mlrun-fake-other", "")
    monkeypatch.setenv("MLRUN_PLUGINS", "mlrun-fake-other")
    err = refused(capsys, "check", str(small_recipe), "model.name=lenet5")
    assert "unknown model 'lenet5'" in err
    assert "note: MLRUN_PLUGINS='mlrun-fake-other' leaves out installed plugins that may provide it:\n" in err
    # Other installed plugins (this environment's) may be listed too: only the fake one is asserted.
    note = " ".join(err[err.index("note: MLRUN_PLUGINS=") :].split())  # the note wraps long lines
    assert "'mlrun_fake_lenet' (mlrun-fake-lenet==0.1.0)" in note
    assert "to load them: MLRUN_PLUGINS=mlrun-fake-other," in note and ",mlrun-fake-lenet" in note
    assert "(or unset MLRUN_PLUGINS to load every plugin)" in note


def test_unknown_names_the_plugins_disabled_autoload_leaves_out(capsys, lenet, monkeypatch, small_recipe) -> None:
    lenet(LENET_MODELS)
    monkeypatch.setenv("MLRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
    err = refused(capsys, "check", str(small_recipe), "model.name=lenet5")
    assert "note: third-party plugins are not loaded (MLRUN_DISABLE_PLUGIN_AUTOLOAD is set); these are installed" in err
    flat = " ".join(err.split())  # notes wrap long lines
    assert "'mlrun_fake_lenet' (mlrun-fake-lenet==0.1.0)" in flat
    assert "to load them: unset MLRUN_DISABLE_PLUGIN_AUTOLOAD" in flat


def test_an_allow_list_entry_that_matches_nothing_is_named(capsys, lenet, monkeypatch, small_recipe) -> None:
    lenet(LENET_MODELS)
    monkeypatch.setenv("MLRUN_PLUGINS", "mlrun-fake-lenett")
    warning = "MLRUN_PLUGINS names 'mlrun-fake-lenett', which matches no installed plugin — did you mean"
    err = refused(capsys, "check", str(small_recipe), "model.name=lenet5")
    assert f"note: {warning} 'mlrun-fake-lenet'?" in err
    code, _, err = cli(capsys, "plugins")
    assert code == 0 and f"warning: {warning} 'mlrun-fake-lenet'?" in err


def test_a_hook_without_hookimpl_is_named(capsys, lenet, small_recipe) -> None:
    lenet("""
def register_models():
    return [Model("lenet5", lenet5, "LeNet-5")]
""")
    fix = "register_models() has no @hookimpl, so mlrun never calls it: add @hookimpl above it (from mlrun import hookimpl)"
    assert plugin_row(capsys)["error"] == fix
    err = refused(capsys, "check", str(small_recipe), "model.name=lenet5")
    assert f"'mlrun_fake_lenet' ({fix})" in err


def _run_folder(tmp_path: Path, small_recipe: Path) -> Path:
    """A run folder made with lenet5 from mlrun-fake-lenet 0.1.0, as run.json records it."""
    folder = tmp_path / "runs" / "lenet-20260101-000000"
    folder.mkdir(parents=True)
    (folder / "recipe.toml").write_text(small_recipe.read_text().replace('"classifier"', '"lenet5"'))
    (folder / "run.json").write_text(json.dumps({"status": "completed", "versions": {
        "python": "3.12.0", "torch": "2.5.0", "mlrun": "0.1.0", "mlrun-fake-lenet": "0.1.0"}}))  # fmt: skip
    (folder / "model.pt").write_bytes(b"")
    return folder


def test_a_run_made_with_a_plugin_that_is_gone_says_what_to_install(capsys, site, tmp_path, small_recipe) -> None:
    folder = _run_folder(tmp_path, small_recipe)
    install = f"note: the run {folder} was trained with mlrun-fake-lenet 0.1.0, which is not installed:\n" \
              "      pip install 'mlrun-fake-lenet==0.1.0'"  # fmt: skip
    for command in (["evaluate", str(folder)], ["predict", str(folder), "--index", "0"], ["resume", str(folder)]):
        err = refused(capsys, *command)
        assert "unknown model 'lenet5'" in err and install in err, command


def test_a_stale_entry_point_says_to_reinstall(capsys, lenet, small_recipe) -> None:
    lenet(LENET_MODELS, target=f"{LENET_MODULE}.plugin")  # the package's layout changed after installing
    row = plugin_row(capsys)
    assert row["status"] == "failed"
    assert row["error"].startswith(
        f"stale entry point '{LENET_MODULE} = {LENET_MODULE}.plugin' (there is no module '{LENET_MODULE}.plugin'): "
        "re-install the package (`pip install -e .` in its source folder or `pip install --force-reinstall "
        "mlrun-fake-lenet`); its entry points changed since it was installed"
    )
    err = refused(capsys, "check", str(small_recipe), "model.name=lenet5")
    assert f"'{LENET_MODULE}' (stale entry point" in err and "re-install the package" in err


def test_an_entry_point_naming_a_missing_object_says_to_reinstall(capsys, lenet) -> None:
    lenet(LENET_MODELS, target=f"{LENET_MODULE}:plugin")
    assert plugin_row(capsys)["error"].startswith(
        f"stale entry point '{LENET_MODULE} = {LENET_MODULE}:plugin' (module '{LENET_MODULE}' has no 'plugin'): "
        "re-install the package"
    )


# 6. All recipe problems in one report: the output-criterion pairing included.
@pytest.mark.parametrize(
    "other",
    ["train.epochs=0", "model.width=3", "optimizer.lr=-1", "transforms.1.mean=[0.5, 0.5]"],
    ids=["train-table", "model-parameter", "another-component", "channel-count"],
)
def test_the_pairing_is_reported_with_every_other_problem(capsys, small_recipe: Path, other: str) -> None:
    err = refused(capsys, "check", str(small_recipe), "model.name=sequential", other)
    assert f"{small_recipe}: 2 problems found; nothing was run" in err
    assert "criterion.name: 'nll' expects log-probabilities, but model 'sequential' outputs raw logits" in err


def test_a_run_resumes_with_a_qualified_name_once_its_name_clashes(capsys, site, monkeypatch, small_recipe) -> None:
    install_fake(site, "mlrun-fake-alpha", HEADER + LION.format(dist="mlrun-fake-alpha"))
    monkeypatch.setenv("MLRUN_PLUGINS", "mlrun-fake-alpha,mlrun-fake-beta")
    code, _, err = cli(capsys, "run", str(small_recipe), "optimizer.name=lion", "train.epochs=1", "train.threads=1")
    assert code == 0, err
    (folder,) = Path("runs").iterdir()
    install_fake(site, "mlrun-fake-beta", HEADER + LION.format(dist="mlrun-fake-beta"))  # a second 'lion' arrives
    err = refused(capsys, "resume", str(folder), "train.epochs=2", "--force")
    assert 'pick one with name = "mlrun-fake-alpha:lion" or name = "mlrun-fake-beta:lion"' in err
    err = refused(capsys, "resume", str(folder), "optimizer.name=mlrun-fake-beta:lion", "train.epochs=2", "--force")
    assert 'optimizer.name: "lion" -> "mlrun-fake-beta:lion"' in err  # another plugin's lion: refused
    code, out, err = cli(
        capsys, "resume", str(folder), "optimizer.name=mlrun-fake-alpha:lion", "train.epochs=2", "--force"
    )
    assert code == 0, err  # the plugin run.json records: the same optimizer, so no change
    assert "resuming at epoch" in out
