"""The conformance kit (mlrun.testing): it passes on every shipped component and catches authors' mistakes."""

from __future__ import annotations

import types
import unittest
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pytest
import torch
from annotated_types import Ge, Gt, Lt
from torch import nn

from mlrun import Component, Criterion, Dataset, Model, Transform, hookimpl
from mlrun.plugins import BUILTIN_PLUGINS
from mlrun.testing import Check, ConformanceError, Report, check_plugin, plugin_checks

from images import write_images
from plugin_fakes import GOOD_MODEL, install_fake

#: Values for the built-in components whose required parameters have no default (or whose defaults need RGB).
BUILTIN_PARAMS = {
    "normalize": {"mean": [0.5], "std": [0.5]},
    "one_cycle": {"max_lr": 0.1},
    "multistep": {"milestones": [1, 2]},
    # The kit's sample images are 1-channel: the 1-channel preset, and a small network for them.
    "normalize_preset": {"preset": "mnist"},
    "torchvision": {"arch": "squeezenet1_1", "in_channels": 1},
}


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small image folder for the built-in image_folder dataset."""
    return write_images(tmp_path_factory.mktemp("images"), per_class=4)


def fake_plugin(**hooks: Any) -> types.ModuleType:
    """A plugin module holding the given hook functions."""
    module = types.ModuleType("mlrun_fake_kit")
    for name, function in hooks.items():
        setattr(module, name, function)
    return module


def failures_of(plugin: Any, **options: Any) -> dict[str, str]:
    """The kit's failures for ``plugin``, by check id (it must fail)."""
    with pytest.raises(ConformanceError) as caught:
        check_plugin(plugin, **options)
    return dict(caught.value.failures)


# ------------------------------------------------------------------ shipped components pass


@pytest.mark.parametrize("module", BUILTIN_PLUGINS)
def test_every_builtin_plugin_passes_with_nothing_skipped(module: str, idx_root: Path, image_root: Path) -> None:
    params = {**BUILTIN_PARAMS, "fashion_mnist": {"root": str(idx_root)}, "mnist": {"root": str(idx_root)}}
    params["image_folder"] = {"root": str(image_root)}
    report = check_plugin(module, params=params)
    assert isinstance(report, Report) and report.skipped == ()
    kinds = {check.split(":")[0] for check in report.passed}
    components = {check.split(":")[1] for check in report.passed}
    # Every component is checked beyond its parameters (a behaviour check), except where none applies.
    assert len(kinds) == 1, kinds
    kind = kinds.pop()
    assert {f"{kind}:{name}:parameters" for name in components} < set(report.passed), report.passed


def test_builtin_checks_cover_each_behaviour(idx_root: Path, image_root: Path) -> None:
    passed = set()
    for module in BUILTIN_PLUGINS:
        roots = {"fashion_mnist": {"root": str(idx_root)}, "mnist": {"root": str(idx_root)}}
        roots["image_folder"] = {"root": str(image_root)}
        passed |= set(check_plugin(module, params={**BUILTIN_PARAMS, **roots}).passed)
    assert {
        "model:classifier:output", "model:network_alternative:output", "model:mlp:output", "model:mlp:out-of-range",
        "criterion:nll_probs:loss", "transform:to_tensor:batch", "transform:normalize:batch",
        "transform:random_crop:batch", "transform:random_horizontal_flip:batch", "dataset:fashion_mnist:samples",
        "dataset:synthetic:samples", "dataset:image_folder:samples", "optimizer:adamw:step", "scheduler:reduce_on_plateau:step",
    } <= passed  # fmt: skip


@pytest.mark.parametrize("name", ["mlrun-convnet", "convnet", "mlrun_convnet", "mlrun_convnet.plugin"])
def test_convnet_passes_whichever_name_it_is_given_by(name: str) -> None:
    report = check_plugin(name)
    assert report.skipped == ()
    assert set(report.passed) == {
        "model:small_cnn:parameters", "model:small_cnn:out-of-range", "model:small_cnn:output",
        "criterion:focal:parameters", "criterion:focal:out-of-range", "criterion:focal:loss",
    }  # fmt: skip


TRANSFORM_CHECKS = plugin_checks("mlrun.builtins.transforms", params=BUILTIN_PARAMS)


@pytest.mark.parametrize("check", TRANSFORM_CHECKS, ids=[check.id for check in TRANSFORM_CHECKS])
def test_pytest_form_runs_each_check_on_its_own(check: Check) -> None:
    assert isinstance(check.id, str) and check.id.startswith("transform:")
    check.run()


def test_a_component_without_values_for_its_required_parameters_is_skipped_with_the_fix() -> None:
    report = check_plugin("mlrun.builtins.schedulers")
    skipped = dict(report.skipped)
    assert set(skipped) == {"scheduler:multistep:step", "scheduler:one_cycle:step"}
    assert "required parameter(s) milestones have no default" in skipped["scheduler:multistep:step"]
    assert "pass params={'one_cycle': {'max_lr': ...}} to check it" in skipped["scheduler:one_cycle:step"]
    assert "skipped scheduler:multistep:step" in str(report)
    (check,) = [c for c in plugin_checks("mlrun.builtins.schedulers") if c.id == "scheduler:multistep:step"]
    with pytest.raises(unittest.SkipTest):  # pytest reports it as skipped
        check.run()


def test_the_kit_leaves_the_callers_random_state_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    check_plugin("mlrun.builtins.transforms", params=BUILTIN_PARAMS)
    assert torch.equal(before, torch.get_rng_state())


def test_a_plugin_installed_by_distribution_name_is_found(site: Path) -> None:
    install_fake(site, "mlrun-fakekit", GOOD_MODEL.format(name="tiny"))
    assert set(check_plugin("mlrun-fakekit").passed) == {"model:tiny:parameters", "model:tiny:output"}


def test_an_unknown_plugin_name_says_what_is_installed() -> None:
    with pytest.raises(LookupError, match=r"no plugin 'mlrun_nowhere'.*installed plugins: .*convnet"):
        check_plugin("mlrun_nowhere")


# ------------------------------------------------------------------ authors' mistakes are caught


def linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def test_a_model_declaring_log_probs_that_returns_logits_fails() -> None:
    @hookimpl
    def register_models() -> list[Model]:
        return [Model("liar", linear, "declares log_probs, returns logits", output="log_probs")]

    failures = failures_of(fake_plugin(register_models=register_models))
    assert list(failures) == ["model:liar:output"]
    message = failures["model:liar:output"]
    assert "model 'liar': declares log_probs, but exp(output) rows sum to" in message
    assert "it looks like logits; declare output='logits', or end the model with log_softmax(dim=1)" in message


def test_a_model_declaring_logits_that_ends_in_softmax_or_probs_that_are_not_fails() -> None:
    def softmax() -> nn.Module:
        return nn.Sequential(linear(), nn.Softmax(dim=1))

    @hookimpl
    def register_models() -> list[Model]:
        return [
            Model("soft", softmax, "softmax declared as logits", output="logits"),
            Model("fake_probs", linear, "logits declared as probs", output="probs"),
            Model("fine", softmax, "softmax declared as probs", output="probs"),
        ]

    failures = failures_of(fake_plugin(register_models=register_models))
    assert set(failures) == {"model:soft:output", "model:fake_probs:output"}
    assert "declare output='probs', or remove the final softmax" in failures["model:soft:output"]
    assert "declares probs, but its rows sum to" in failures["model:fake_probs:output"]


def test_a_configurable_output_is_checked_for_every_choice() -> None:

    def switch(output: Literal["logits", "log_probs"] = "logits") -> nn.Module:
        return linear()  # forgets the log_softmax for output="log_probs"

    @hookimpl
    def register_models() -> list[Model]:
        return [Model("switch", switch, "configurable output", output="output")]

    failures = failures_of(fake_plugin(register_models=register_models))
    assert "model 'switch' (built with output='log_probs'): declares log_probs" in failures["model:switch:output"]


def test_a_batch_transform_that_differs_from_its_per_sample_version_fails() -> None:
    def scale(factor: float = 2.0) -> Any:
        return lambda x: x * factor

    def scale_batch(factor: float = 2.0) -> Any:
        return lambda batch: batch * factor + 1  # off by one

    @hookimpl
    def register_transforms() -> list[Transform]:
        return [Transform("scale", scale, "x * factor", batch=scale_batch)]

    failures = failures_of(fake_plugin(register_transforms=register_transforms))
    assert list(failures) == ["transform:scale:batch"]
    assert failures["transform:scale:batch"] == (
        "transform 'scale': on float image tensors (C x H x W per sample), the batch version differs from the "
        "per-sample transform at sample 0 (largest difference 1)"
    )


def per_sample_invert(p: Annotated[float, Ge(0)] = 0.5) -> Any:
    """Invert a tensor image with probability p, drawn from torch's generator as torchvision does."""
    return lambda image: 1 - image if torch.rand(1) < p else image


def _invert_where(batch: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    return torch.where(chosen.view(-1, *[1] * (batch.dim() - 1)), 1 - batch, batch)


def test_random_batch_transforms_must_draw_per_sample_from_torch_and_stay_possible() -> None:
    import random

    def good(p: float = 0.5) -> Any:
        return lambda batch: _invert_where(batch, torch.rand(batch.shape[0]) < p)

    def once_per_batch(p: float = 0.5) -> Any:
        return lambda batch: 1 - batch if torch.rand(1) < p else batch

    def python_random(p: float = 0.5) -> Any:
        return lambda batch: _invert_where(batch, torch.tensor([random.random() < p for _ in batch]))

    def impossible(p: float = 0.5) -> Any:
        return lambda batch: torch.where(torch.rand(batch.shape[0]).view(-1, 1, 1, 1) < p, 2 - batch, batch)

    @hookimpl
    def register_transforms() -> list[Transform]:
        return [
            Transform(name, per_sample_invert, "random invert", random=True, batch=batch)
            for name, batch in (("good", good), ("once", once_per_batch), ("python", python_random),
                                ("impossible", impossible))
        ]  # fmt: skip

    failures = failures_of(fake_plugin(register_transforms=register_transforms))
    assert set(failures) == {"transform:once:batch", "transform:python:batch", "transform:impossible:batch"}
    assert "all alike, while the per-sample transform varies" in failures["transform:once:batch"]
    assert "not from Python's random or NumPy" in failures["transform:python:batch"]
    assert "in a way the per-sample transform never gives it" in failures["transform:impossible:batch"]


class Unenforced:
    """A constraint marker that pydantic does not know: the annotation promises more than is enforced."""

    gt = 0


def test_parameter_bounds_and_defaults_must_hold() -> None:
    def bad_default(dropout: Annotated[float, Ge(0), Lt(1)] = 1.0) -> nn.Module:
        return linear()

    def unenforced(width: Annotated[int, Unenforced()] = 8) -> nn.Module:
        return linear()

    @hookimpl
    def register_models() -> list[Model]:
        return [Model("bad_default", bad_default, "default out of range"), Model("loose", unenforced, "unenforced")]

    failures = failures_of(fake_plugin(register_models=register_models))
    assert set(failures) == {"model:bad_default:parameters", "model:loose:out-of-range"}
    assert "the default dropout = 1.0 breaks its own annotation" in failures["model:bad_default:parameters"]
    assert "yet width = 0 (> 0 broken) was accepted" in failures["model:loose:out-of-range"]


def test_hook_mistakes_are_listed_with_every_other_failure() -> None:
    def register_criteria() -> list[Criterion]:  # no @hookimpl: never called
        return []

    @hookimpl
    def register_models() -> list[Model]:
        raise RuntimeError("needs a GPU")

    @hookimpl
    def register_transforms() -> list[Any]:
        return ["not a descriptor"]

    plugin = fake_plugin(register_criteria=register_criteria, register_models=register_models,
                         register_transforms=register_transforms)  # fmt: skip
    with pytest.raises(ConformanceError) as caught:
        check_plugin(plugin)
    error = caught.value
    assert isinstance(error, AssertionError) and error.plugin == "mlrun_fake_kit"
    messages = [message for _, message in error.failures]
    assert any("register_criteria is not marked @hookimpl" in m for m in messages)
    assert "register_models() raised RuntimeError: needs a GPU" in messages
    assert any("register_transforms() must return Transform descriptors" in m for m in messages)
    assert str(error).startswith("plugin mlrun_fake_kit: 3 conformance check(s) failed:\n  - plugin:")


class Pairs(torch.utils.data.Dataset):
    """Ten 2x2 uint8 images with labels 0, 1, 2, 0, ..."""

    def __init__(self) -> None:
        self.data = torch.arange(10 * 4, dtype=torch.uint8).view(10, 2, 2)
        self.targets = torch.arange(10) % 3

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.data[index], int(self.targets[index])


def test_a_misspelled_hook_is_named_and_a_plugin_declared_kind_is_checked() -> None:
    @hookimpl
    def register_model() -> list[Model]:
        return [Model("never", linear, "never registered")]

    failures = failures_of(fake_plugin(register_model=register_model))
    assert failures == {
        "plugin:hooks": "mlrun_fake_kit: unknown hook register_model() — did you mean 'register_models'?; "
        "mlrun never calls it"
    }

    def gear(*, teeth: Annotated[int, Gt(0)] = 0) -> dict[str, int]:
        return {"teeth": teeth}

    @hookimpl
    def register_kinds() -> list[type]:
        return [Widget]

    @hookimpl
    def register_widgets() -> list[Widget]:
        return [Widget("gear", gear, "a toothed wheel")]

    failures = failures_of(fake_plugin(register_kinds=register_kinds, register_widgets=register_widgets))
    assert list(failures) == ["widget:gear:parameters"]  # its hook is known; its default breaks its bound
    assert "the default teeth = 0 breaks its own annotation" in failures["widget:gear:parameters"]


@dataclass(frozen=True)
class Widget(Component):
    """A kind a plugin declares."""

    kind: ClassVar[str] = "widget"
    hook: ClassVar[str] = "register_widgets"
    section: ClassVar[str] = "widgets"


def test_a_dataset_whose_tensors_differ_from_its_samples_fails() -> None:
    def pairs(*, train: bool, transform: Any, size: Annotated[int, Gt(0)] = 10) -> Pairs:
        return Pairs()

    @hookimpl
    def register_datasets() -> list[Dataset]:
        return [
            Dataset("right", pairs, "tensors match", tensors=lambda d: (d.data, d.targets)),
            Dataset("shifted", pairs, "labels shifted", tensors=lambda d: (d.data, d.targets.roll(1))),
        ]

    failures = failures_of(fake_plugin(register_datasets=register_datasets))
    assert list(failures) == ["dataset:shifted:samples"]
    assert (
        failures["dataset:shifted:samples"] == "dataset 'shifted' (train split): item 1 has label 1, tensors() says 0"
    )
