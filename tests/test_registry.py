"""Plugins fill one namespace per kind; duplicates and unknown names are explained."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest

from mlrun import Criterion, Model, hookimpl
from mlrun.plugins import PluginInfo, PluginSettings, create_manager, load_plugins
from mlrun.registry import LookupProblem, build_registry

EXPECTED = {
    "dataset": {"fashion_mnist", "mnist", "synthetic", "image_folder"},
    "transform": {
        "to_tensor",
        "normalize",
        "flatten",
        "random_horizontal_flip",
        "random_rotation",
        "random_crop",
        "resize",
        "center_crop",
        "grayscale",
        "normalize_preset",
        "random_resized_crop",
        "color_jitter",
        "random_affine",
    },
    "model": {"sequential", "sequential_log_softmax", "classifier", "network_alternative", "mlp", "torchvision"},
    "criterion": {"nll", "cross_entropy", "nll_probs"},
    "optimizer": {"sgd", "adam", "adamw", "rmsprop", "radam", "nadam", "adagrad", "adadelta", "adamax", "asgd"},
}


def test_builtins_are_registered_through_the_hooks(registry) -> None:
    for kind, names in EXPECTED.items():
        assert set(registry.names(kind)) == names
    for entry in registry:
        assert entry.plugin.builtin and entry.plugin.label == "built-in"
        assert entry.plugin.name.startswith("mlrun.builtins.")


PUBLIC_MODULES = (
    "mlrun",
    "mlrun.data",
    "mlrun.idx",
    "mlrun.metrics",
    "mlrun.callbacks",
    "mlrun.images",
    "mlrun.image_cache",
    # The trial reporter behind the built-in sweep_trial callback (a study's per-epoch reports and pruning).
    "mlrun.sweep.callback",
)


def test_builtin_plugins_use_only_the_public_api() -> None:
    """Built-ins import from mlrun only what a third-party plugin can: the package and the PUBLIC_MODULES."""
    import mlrun
    import mlrun.builtins

    public = set(mlrun.__all__)
    for path in Path(mlrun.builtins.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlrun"):
                assert node.module in PUBLIC_MODULES, f"{path.name} imports {node.module}"
                if node.module == "mlrun":
                    assert {a.name for a in node.names} <= public, path.name


def _plugin(name: str, **hooks: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(__name__=name, **hooks)


def _registry_with(*plugins: types.SimpleNamespace):
    loaded = load_plugins(PluginSettings(autoload=False))
    for plugin in plugins:
        loaded.infos[plugin.__name__] = PluginInfo(name=plugin.__name__, distribution=plugin.__name__, version="1.0")
        loaded.manager.register(plugin, name=plugin.__name__)
    return build_registry(loaded)


def _model_plugin(name: str, model_name: str) -> types.SimpleNamespace:
    @hookimpl
    def register_models() -> list[Model]:
        return [Model(model_name, lambda: None, f"from {name}")]

    return _plugin(name, register_models=register_models)


def test_third_party_component_is_found_with_its_plugin() -> None:
    registry = _registry_with(_model_plugin("extra-models", "tiny"))
    entry = registry.get("model", "tiny")
    assert entry.plugin.label == "extra-models==1.0"
    assert "classifier" in registry.names("model")  # built-ins still there


def test_duplicate_names_name_both_plugins_whatever_the_order() -> None:
    messages = []
    for order in (("a-plugin", "b-plugin"), ("b-plugin", "a-plugin")):
        registry = _registry_with(*(_model_plugin(n, "twin") for n in order))
        with pytest.raises(LookupProblem) as info:
            registry.get("model", "twin")
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "'a-plugin'" in messages[0] and "'b-plugin'" in messages[0]
    assert 'name = "a-plugin:twin" or name = "b-plugin:twin"' in messages[0]


def test_a_clash_stays_usable_by_qualified_name() -> None:
    registry = _registry_with(_model_plugin("a-plugin", "twin"), _model_plugin("b-plugin", "twin"))
    assert registry.get("model", "b-plugin:twin").component.summary == "from b-plugin"
    assert registry.get("model", "A_Plugin:twin").plugin.name == "a-plugin"  # compared the way pip compares names
    with pytest.raises(LookupProblem, match=r"no loaded plugin called 'c-plugin' gives model 'twin'"):
        registry.get("model", "c-plugin:twin")
    assert [e.qualified_name for e in registry.everything() if e.component.name == "twin"] == [
        "a-plugin:twin",
        "b-plugin:twin",
    ]


def test_a_builtin_name_is_reserved_and_the_builtin_keeps_working() -> None:
    registry = _registry_with(_model_plugin("shadow", "classifier"), _model_plugin("shadow-too", "classifier"))
    assert registry.get("model", "classifier").plugin.builtin
    info = registry.plugins.infos["shadow"]
    assert info.status == "failed"  # it gave nothing else
    assert "'classifier' is the name of a built-in model, and built-in names are reserved" in (info.error or "")
    assert "rename it (e.g. 'shadow_classifier')" in (info.error or "")


def test_unknown_name_suggests_the_closest_and_how_to_list(registry) -> None:
    with pytest.raises(LookupProblem) as info:
        registry.get("model", "clasifier")
    message = str(info.value)
    assert "did you mean 'classifier'?" in message
    assert "mlrun list model" in message


def test_a_hook_that_raises_marks_only_its_plugin_failed() -> None:
    @hookimpl
    def register_criteria() -> list[Criterion]:
        raise RuntimeError("boom")

    registry = _registry_with(_plugin("broken", register_criteria=register_criteria))
    error = registry.plugins.infos["broken"].error or ""
    assert error.startswith("register_criteria() raised RuntimeError at ") and error.endswith(": boom")
    assert f"{__file__}:" in error  # the test module holds the hook: its file and line, not mlrun's
    assert "nll" in registry.names("criterion")
    with pytest.raises(LookupProblem, match="'broken'"):
        registry.get("criterion", "focal")


def test_a_hook_returning_the_wrong_kind_fails_its_plugin() -> None:
    @hookimpl
    def register_criteria() -> list[Model]:
        return [Model("not_a_loss", lambda: None, "oops")]

    registry = _registry_with(_plugin("confused", register_criteria=register_criteria))
    assert "must return Criterion descriptors" in registry.plugins.infos["confused"].error
    assert "not_a_loss" not in registry.names("criterion") + registry.names("model")


def test_every_kind_s_hook_is_a_spec_the_manager_knows() -> None:
    from mlrun.components import BUILTIN_KINDS

    manager = create_manager()
    specs = {name for name in dir(manager.hook) if not name.startswith("_") and getattr(manager.hook, name).has_spec()}
    assert specs == {cls.hook for cls in BUILTIN_KINDS} | {"register_kinds"}
