"""Built-in optimizers: every torch.optim optimizer that trains a module, typed from torch's signatures."""

from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path

import annotated_types
import pytest
import torch

from mlrun.builtins import optimizers
from mlrun.params import parameters, validate_params
from mlrun.recipe import ComponentSpec

from conftest import RECIPES, run_cli

ALL = {"sgd", "adam", "adamw", "rmsprop", "radam", "nadam", "adagrad", "adadelta", "adamax", "asgd"}
GENERATED = {name: getattr(torch.optim, cls) for name, cls, _ in optimizers.GENERATED}


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
        torch.nn.LayerNorm(8), torch.nn.Linear(8, 3),
    )  # fmt: skip


def build(registry, name: str, model: torch.nn.Module, **raw) -> torch.optim.Optimizer:
    """Validate ``raw`` as a recipe would and build the optimizer the way the engine does."""
    entry = registry.get("optimizer", name)
    params, problems = validate_params(entry.component, raw)
    assert problems == []
    return ComponentSpec(entry, params).build(params=model.parameters(), model=model)


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    torch.manual_seed(1)
    inputs, labels = torch.randn(16, 4), torch.randint(0, 3, (16,))
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(inputs), labels).backward()
    optimizer.step()


def test_all_ten_are_registered(registry) -> None:
    assert set(registry.names("optimizer")) == ALL


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("decay_bias_and_norm", [True, False])
def test_each_builds_with_its_defaults_and_a_step_changes_the_weights(registry, name, decay_bias_and_norm) -> None:
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = build(registry, name, model, decay_bias_and_norm=decay_bias_and_norm)
    step(model, optimizer)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_defaults_are_torch_s_own(registry, name) -> None:
    torch_params = inspect.signature(GENERATED[name].__init__).parameters
    ours = parameters(registry.get("optimizer", name).component)
    for p in ours:
        if p.name == "decay_bias_and_norm":
            assert p.default is True
        elif p.name == "fused":  # torch's None means "let torch choose"; ours asks for the fused step
            assert p.default is True and optimizers.fused_on_cpu(GENERATED[name])
        else:
            assert p.default == torch_params[p.name].default, p.name
            assert type(p.default) in (bool, float, tuple), p.name
    skipped = set(torch_params) - {p.name for p in ours}
    assert skipped <= {"self", "params", "foreach", "capturable", "differentiable", "fused"}
    assert "weight_decay" in {p.name for p in ours}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_factories_read_as_typed_keyword_parameters(registry, name) -> None:
    factory = registry.get("optimizer", name).component.factory
    signature = inspect.signature(factory)
    hints = typing.get_type_hints(factory, include_extras=True)
    assert list(signature.parameters)[:2] == ["params", "model"]
    for p in list(signature.parameters.values())[1:]:
        assert p.kind is p.KEYWORD_ONLY and p.name in hints
    lr = typing.get_args(hints["lr"])
    assert lr[0] is float and any(isinstance(m, annotated_types.Gt) and m.gt == 0 for m in lr[1:])
    assert typing.get_args(hints["weight_decay"])[0] is float
    assert hints["decay_bias_and_norm"] is bool
    if "betas" in hints:
        assert len(typing.get_args(hints["betas"])) == 2


def test_list_json_shows_all_ten_with_json_friendly_defaults() -> None:
    result = run_cli("list", "optimizer", "--json")
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert set(entries) == ALL
    for name, entry in entries.items():
        for p in entry["parameters"]:
            assert p["required"] is False and p["default"] is not None, (name, p)
        assert {p["name"]: p["default"] for p in entry["parameters"]}["decay_bias_and_norm"] is True
    adamw = {p["name"]: p["default"] for p in entries["adamw"]["parameters"]}
    assert adamw["lr"] == 0.001 and adamw["weight_decay"] == 0.01 and adamw["betas"] == [0.9, 0.999]


def test_strict_validation_refuses_a_string_lr_and_an_unknown_key() -> None:
    recipe = str(RECIPES / "summary.toml")
    result = run_cli("check", recipe, "optimizer.name=adamw", "optimizer.lerning_rate=0.1")
    assert result.returncode == 2
    assert "unknown parameter for optimizer 'adamw' — did you mean 'lr'?" in result.stderr
    result = run_cli("check", recipe, "optimizer.name=adamw", 'optimizer.lr="0.1"')
    assert result.returncode == 2
    assert 'optimizer.lr: expected number (> 0), got "0.1"' in result.stderr


def test_torch_s_own_checks_run_at_validation(registry) -> None:
    component = registry.get("optimizer", "adadelta").component
    params, problems = validate_params(component, {"rho": 1.5})
    assert problems == []
    with pytest.raises(ValueError, match="torch.optim.Adadelta refuses these settings: Invalid rho"):
        component.validate(params)


@pytest.mark.parametrize("name", ["adamw", "sgd", "adam"])
def test_no_decay_group_holds_biases_and_norm_weights(registry, name) -> None:
    model = small_model()
    optimizer = build(registry, name, model, weight_decay=0.05, decay_bias_and_norm=False)
    decayed, undecayed = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and undecayed["weight_decay"] == 0.0
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    norms = [m for m in model if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.LayerNorm))]
    ids = lambda group: {id(p) for p in group["params"]}
    assert ids(decayed) == {id(m.weight) for m in linears}
    assert ids(undecayed) == {id(m.bias) for m in linears} | {id(p) for m in norms for p in m.parameters()}


def test_default_is_one_group_bitwise_equal_to_torch(registry) -> None:
    ours_model, torch_model = small_model(), small_model()
    ours = build(registry, "adamw", ours_model, lr=0.01)
    reference = torch.optim.AdamW(torch_model.parameters(), lr=0.01, fused=True)
    assert len(ours.param_groups) == 1
    for model, optimizer in ((ours_model, ours), (torch_model, reference)):
        for _ in range(3):
            step(model, optimizer)
    for a, b in zip(ours_model.parameters(), torch_model.parameters()):
        assert torch.equal(a, b)


def test_decay_bias_and_norm_false_needs_the_model() -> None:
    factory = optimizers.make_factory("adamw", torch.optim.AdamW)
    with pytest.raises(ValueError, match="needs the model"):
        factory(small_model().parameters(), decay_bias_and_norm=False)


def test_end_to_end_adamw_without_decaying_biases(tmp_path: Path) -> None:
    result = run_cli(
        str(RECIPES / "summary.toml"), "dataset.name=synthetic", "dataset.size=320", "train.epochs=1",
        "optimizer.name=adamw", "optimizer.weight_decay=0.01", "optimizer.decay_bias_and_norm=false",
        f"train.output_dir={tmp_path / 'runs'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "decay_bias_and_norm = false" in (run_dir / "recipe.toml").read_text()
