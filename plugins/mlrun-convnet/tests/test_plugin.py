"""Tests of the mlrun-convnet plugin: the model, the focal loss, the hooks and the registration."""

from __future__ import annotations

from importlib import metadata

import pytest
import torch
import torch.nn.functional as F

from mlrun import Criterion, Model
from mlrun.testing import check_plugin, plugin_checks
from mlrun_convnet import plugin
from mlrun_convnet.plugin import FocalLoss, focal, focal_loss, small_cnn


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- model


def test_small_cnn_outputs_one_logit_per_class() -> None:
    model = small_cnn()
    model.eval()
    out = model(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)
    assert out.dtype == torch.float32


def test_small_cnn_has_fewer_than_500k_parameters() -> None:
    assert _count(small_cnn()) < 500_000


def test_small_cnn_has_two_conv_blocks_with_batch_norm_and_pooling() -> None:
    model = small_cnn(channels=8)
    kinds = [type(m) for m in model.modules()]
    assert kinds.count(torch.nn.Conv2d) == 2
    assert kinds.count(torch.nn.BatchNorm2d) == 2
    assert kinds.count(torch.nn.MaxPool2d) == 2
    assert not any(issubclass(k, (torch.nn.Softmax, torch.nn.LogSoftmax)) for k in kinds)


def test_small_cnn_parameters_change_the_network() -> None:
    model = small_cnn(channels=8, hidden=16, num_classes=3, dropout=0.0)
    model.eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    assert _count(model) < _count(small_cnn(channels=16, hidden=16, num_classes=3))


def test_small_cnn_accepts_flattened_images() -> None:
    torch.manual_seed(0)
    model = small_cnn(channels=4)
    model.eval()
    images = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(images.reshape(3, -1)), model(images))


def test_small_cnn_learns_a_batch() -> None:
    """A few Adam steps on one fixed batch must drive the loss well down (gradients flow)."""
    torch.manual_seed(0)
    model = small_cnn(channels=8, hidden=32, dropout=0.0)
    images, labels = torch.randn(32, 1, 28, 28), torch.arange(32) % 10
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(images), labels)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.2 * losses[0]


# --------------------------------------------------------------------------- focal loss


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_focal_with_gamma_zero_is_cross_entropy(label_smoothing: float) -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(64, 10) * 3, torch.randint(0, 10, (64,))
    expected = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    got = focal(gamma=0.0, label_smoothing=label_smoothing)(logits, labels)
    torch.testing.assert_close(got, expected)


def test_focal_gradient_with_gamma_zero_is_cross_entropy_gradient() -> None:
    torch.manual_seed(1)
    logits, labels = torch.randn(16, 10, requires_grad=True), torch.randint(0, 10, (16,))
    (grad_focal,) = torch.autograd.grad(focal_loss(logits, labels, gamma=0.0), logits)
    (grad_ce,) = torch.autograd.grad(F.cross_entropy(logits, labels), logits)
    torch.testing.assert_close(grad_focal, grad_ce)


def test_focal_matches_the_formula_and_averages_over_the_batch() -> None:
    torch.manual_seed(2)
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    p_true = logits.softmax(dim=1)[torch.arange(8), labels]
    expected = (-((1 - p_true) ** 2) * p_true.log()).mean()
    torch.testing.assert_close(focal(gamma=2.0)(logits, labels), expected)
    # mean, not sum: a batch of two copies has the same loss
    doubled = focal(gamma=2.0)(logits.repeat(2, 1), labels.repeat(2))
    torch.testing.assert_close(doubled, expected)


def test_focal_down_weights_easy_examples() -> None:
    labels = torch.tensor([0, 0])
    easy = torch.tensor([[4.0, 0.0, 0.0]])  # p_true ~ 0.96
    hard = torch.tensor([[0.0, 1.0, 1.0]])  # p_true ~ 0.16
    ce = [float(F.cross_entropy(x, labels[:1])) for x in (easy, hard)]
    fl = [float(focal_loss(x, labels[:1], gamma=2.0)) for x in (easy, hard)]
    ratio_easy, ratio_hard = fl[0] / ce[0], fl[1] / ce[1]
    assert ratio_easy < 0.01  # (1 - 0.96)^2 ~ 0.0013
    assert ratio_hard > 0.5  # (1 - 0.16)^2 ~ 0.70
    assert ratio_easy < ratio_hard
    # every example's loss shrinks as gamma grows, the easy one fastest
    for x in (easy, hard):
        losses = [float(focal_loss(x, labels[:1], gamma=g)) for g in (0.0, 0.5, 1.0, 2.0, 5.0)]
        assert losses == sorted(losses, reverse=True)


def test_focal_gradients_are_finite_for_confident_predictions() -> None:
    logits = torch.tensor([[60.0, 0.0, 0.0], [0.0, 60.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0])
    for gamma in (0.5, 2.0):
        (grad,) = torch.autograd.grad(focal_loss(logits, labels, gamma=gamma), logits)
        assert torch.isfinite(grad).all()


def test_focal_is_a_module_with_its_settings() -> None:
    loss = focal(gamma=1.5, label_smoothing=0.05)
    assert isinstance(loss, FocalLoss)
    assert (loss.gamma, loss.label_smoothing) == (1.5, 0.05)
    assert "gamma=1.5" in repr(loss)


# --------------------------------------------------------------------------- hooks


def test_hooks_return_the_right_descriptors() -> None:
    models = plugin.register_models()
    criteria = plugin.register_criteria()
    assert [type(m) for m in models] == [Model]
    assert [type(c) for c in criteria] == [Criterion]
    (model,) = models
    (criterion,) = criteria
    assert model.name == "small_cnn" and model.output == "logits"
    assert criterion.name == "focal" and criterion.expects == ("logits",)
    assert model.factory is small_cnn and criterion.factory is focal


def test_parameters_are_typed_and_constrained() -> None:
    from mlrun.params import validate_params

    (model,) = plugin.register_models()
    (criterion,) = plugin.register_criteria()
    values, problems = validate_params(model, {"channels": 8})
    assert problems == [] and values["channels"] == 8
    for bad in ({"channels": 0}, {"dropout": 1.0}, {"channels": "8"}, {"width": 3}):
        assert validate_params(model, bad)[1], bad
    assert validate_params(criterion, {"gamma": -1.0})[1]
    assert validate_params(criterion, {"gamma": 0.0})[1] == []


# --------------------------------------------------------------------------- mlrun's conformance checks

#: Every convention check mlrun has for this plugin's components (output kind, parameters, ...).
CHECKS = plugin_checks("mlrun-convnet")


@pytest.mark.parametrize("check", CHECKS, ids=[check.id for check in CHECKS])
def test_conformance(check) -> None:
    check.run()


def test_conformance_covers_both_components_and_skips_nothing() -> None:
    report = check_plugin("mlrun-convnet")
    assert report.skipped == ()
    assert {"model:small_cnn:output", "criterion:focal:loss", "model:small_cnn:out-of-range"} <= set(report.passed)


# --------------------------------------------------------------------------- registration


def test_installed_distribution_declares_the_entry_point() -> None:
    dist = metadata.distribution("mlrun-convnet")
    assert dist.version == "0.1.0"
    points = [ep for ep in dist.entry_points if ep.group == "mlrun"]
    assert [(ep.name, ep.value) for ep in points] == [("convnet", "mlrun_convnet.plugin")]


def test_mlrun_registry_sees_the_components_from_this_plugin() -> None:
    from mlrun.plugins import PluginSettings, load_plugins
    from mlrun.registry import build_registry

    plugins = load_plugins(PluginSettings(autoload=True, allow=frozenset({"convnet"})))
    assert plugins.failed() == []
    registry = build_registry(plugins)
    for kind, name in (("model", "small_cnn"), ("criterion", "focal")):
        entry = registry.get(kind, name)
        assert entry.plugin.label == "mlrun-convnet==0.1.0"
        assert not entry.plugin.builtin
    assert registry.get("model", "small_cnn").component.factory is small_cnn
