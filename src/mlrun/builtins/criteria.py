"""Built-in criteria (loss functions), each declaring which model output it is correct for."""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Gt, Lt
from torch import nn

from mlrun import Criterion, hookimpl


def nll() -> nn.Module:
    """NLLLoss: for models that output log-probabilities (log_softmax last)."""
    return nn.NLLLoss()


def cross_entropy(label_smoothing: Annotated[float, Ge(0), Lt(1)] = 0.0) -> nn.Module:
    """CrossEntropyLoss: for models that output raw logits."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


class ProbabilityNLLLoss(nn.Module):
    """NLL of the log of probabilities: the fitting loss for a softmax output."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood; eps keeps log() finite where a probability underflows to 0."""
        return nn.functional.nll_loss(torch.log(probs.clamp_min(self.eps)), labels)


def nll_probs(eps: Annotated[float, Gt(0), Lt(1)] = 1e-7) -> nn.Module:
    """NLL of log(probabilities): for models that output softmax probabilities."""
    return ProbabilityNLLLoss(eps)


@hookimpl
def register_criteria() -> list[Criterion]:
    """NLLLoss, CrossEntropyLoss and NLL on probabilities."""
    return [
        Criterion("nll", nll, "NLLLoss: negative log-likelihood of log-probabilities", expects=("log_probs",)),
        Criterion("cross_entropy", cross_entropy, "CrossEntropyLoss on raw logits (log_softmax + NLL)", expects=("logits",)),
        Criterion("nll_probs", nll_probs, "NLL of log(probabilities), for softmax outputs", expects=("probs",)),
    ]  # fmt: skip
