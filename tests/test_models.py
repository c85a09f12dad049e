"""The notes' four networks and the MLP behave as the notes describe."""

from __future__ import annotations

import pytest
import torch

from mlrun.builtins import criteria, models

BATCH = torch.randn(64, 1, 28, 28)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("factory", "params"),
    [(models.sequential, 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10),
     (models.sequential_log_softmax, 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10),
     (models.Classifier, 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10),
     (models.NetworkAlternative, 784 * 256 + 256 + 256 * 10 + 10)],
)  # fmt: skip
def test_notes_networks_have_the_notes_shapes(factory, params: int) -> None:
    model = factory()
    assert n_params(model) == params
    assert model(BATCH).shape == (64, 10)


def test_log_softmax_outputs_are_log_probabilities() -> None:
    for model in (models.sequential_log_softmax(), models.Classifier()):
        rows = model(BATCH).exp().sum(dim=1)
        assert torch.allclose(rows, torch.ones(64), atol=1e-5)


def test_network_alternative_outputs_probabilities() -> None:
    out = models.NetworkAlternative()(BATCH)
    assert (out >= 0).all() and torch.allclose(out.sum(dim=1), torch.ones(64), atol=1e-5)


def test_sequential_outputs_raw_logits() -> None:
    out = models.sequential()(BATCH)
    assert not torch.allclose(out.exp().sum(dim=1), torch.ones(64), atol=1e-2)


def test_mlp_builds_what_it_is_asked_for() -> None:
    model = models.mlp(hidden_sizes=[32, 16], activation="tanh", dropout=0.1, output="log_probs")
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Flatten", "Linear", "Tanh", "Dropout", "Linear", "Tanh", "Dropout", "Linear", "LogSoftmax"]
    assert models.mlp(hidden_sizes=[])(BATCH).shape == (64, 10)


def test_nll_probs_matches_nll_of_log() -> None:
    probs = torch.softmax(torch.randn(8, 10), dim=1)
    labels = torch.randint(0, 10, (8,))
    expected = torch.nn.functional.nll_loss(probs.log(), labels)
    assert torch.allclose(criteria.nll_probs()(probs, labels), expected)
    zero = torch.zeros(2, 10)
    zero[:, 0] = 1.0
    assert torch.isfinite(criteria.nll_probs()(zero, torch.tensor([1, 2])))
