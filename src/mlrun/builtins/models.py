"""Built-in models: the four networks of the classic notes, and a configurable MLP."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Lt
from torch import nn

from mlrun import Model, hookimpl

INPUT_SIZE = 28 * 28
NUM_CLASSES = 10


def sequential() -> nn.Module:
    """Notes model 0: Sequential 784-128-64-10 with ReLU, returning raw logits."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(INPUT_SIZE, 128), nn.ReLU(),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, NUM_CLASSES),
    )  # fmt: skip


def sequential_log_softmax() -> nn.Module:
    """Notes model 1: model 0 followed by LogSoftmax(dim=1)."""
    model = sequential()
    assert isinstance(model, nn.Sequential)
    model.append(nn.LogSoftmax(dim=1))
    return model


class Classifier(nn.Module):
    """Notes model 2 (the Summary's model): 784-128-64-10, ReLU, log_softmax(dim=1)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden1 = nn.Linear(INPUT_SIZE, 128)
        self.hidden2 = nn.Linear(128, 64)
        self.hidden3 = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flatten each image, two ReLU layers, log-probabilities over the classes."""
        x = x.reshape(x.shape[0], -1)
        x = F.relu(self.hidden1(x))
        x = F.relu(self.hidden2(x))
        return F.log_softmax(self.hidden3(x), dim=1)


class NetworkAlternative(nn.Module):
    """Notes model 3: 784-256-10 with a sigmoid hidden layer and a softmax output."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(INPUT_SIZE, 256)
        self.output = nn.Linear(256, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flatten, sigmoid hidden layer, class probabilities (each row sums to 1)."""
        x = x.reshape(x.shape[0], -1)
        x = torch.sigmoid(self.hidden(x))
        return F.softmax(self.output(x), dim=1)


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def mlp(
    input_size: Annotated[int, Gt(0)] = INPUT_SIZE,
    hidden_sizes: list[Annotated[int, Gt(0)]] = [128, 64],  # noqa: B006 - never mutated
    num_classes: Annotated[int, Ge(2)] = NUM_CLASSES,
    activation: Literal["relu", "tanh", "sigmoid", "gelu"] = "relu",
    dropout: Annotated[float, Ge(0), Lt(1)] = 0.0,
    output: Literal["logits", "log_probs"] = "logits",
) -> nn.Module:
    """A multilayer perceptron: Linear + activation (+ dropout) per hidden size, then a linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = input_size
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    if output == "log_probs":
        layers.append(nn.LogSoftmax(dim=1))
    return nn.Sequential(*layers)


@hookimpl
def register_models() -> list[Model]:
    """The notes' four networks and the general MLP."""
    return [
        Model("sequential", sequential, "notes model 0: Sequential 784-128-64-10 ReLU, raw logits", output="logits"),
        Model("sequential_log_softmax", sequential_log_softmax, "notes model 1: model 0 + LogSoftmax(dim=1), log-probabilities", output="log_probs"),
        Model("classifier", Classifier, "notes model 2 (Summary): 784-128-64-10 ReLU, log_softmax output", output="log_probs"),
        Model("network_alternative", NetworkAlternative, "notes model 3: 784-256-10, sigmoid hidden, softmax probabilities", output="probs"),
        Model("mlp", mlp, "configurable MLP: hidden sizes, activation, dropout, logits or log_probs", output="output"),
    ]  # fmt: skip
