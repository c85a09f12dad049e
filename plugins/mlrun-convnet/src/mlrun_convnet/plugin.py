"""The mlrun plugin module: a small CNN model and a focal loss.

Written only against mlrun's public plugin API (``hookimpl`` and the component
descriptors). The factories' type-annotated keyword parameters are the recipe
parameters, validated by mlrun before anything is built.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Lt
from torch import nn

from mlrun import Criterion, Model, hookimpl

IMAGE_SIZE = 28
NUM_CLASSES = 10


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (same padding) + batch norm + ReLU + 2x2 max-pool: halves height and width."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Two conv blocks (``channels``, then ``2 * channels``) and a small linear head; returns logits.

    Expects ``(N, 1, 28, 28)`` images; flattened ``(N, 784)`` inputs are reshaped first.
    """

    def __init__(self, channels: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        wide = 2 * channels
        side = IMAGE_SIZE // 4  # two 2x2 poolings: 28 -> 14 -> 7
        self.features = nn.Sequential(conv_block(1, channels), conv_block(channels, wide))
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(wide * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw class scores (logits), shape ``(N, num_classes)``."""
        if x.dim() == 2:  # images flattened by a transform: restore 1 x 28 x 28
            x = x.reshape(x.shape[0], 1, IMAGE_SIZE, IMAGE_SIZE)
        return self.head(self.features(x))


def small_cnn(
    channels: Annotated[int, Gt(0)] = 24,
    hidden: Annotated[int, Gt(0)] = 128,
    num_classes: Annotated[int, Ge(2)] = NUM_CLASSES,
    dropout: Annotated[float, Ge(0), Lt(1)] = 0.25,
) -> nn.Module:
    """A small CNN for 1x28x28 grayscale images: 2 conv blocks, a linear head, raw logits."""
    return SmallCNN(channels=channels, hidden=hidden, num_classes=num_classes, dropout=dropout)


def focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 2.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Focal loss ``-sum_c q_c (1 - p_c)^gamma log p_c``, averaged over the batch.

    ``q`` is the one-hot target, smoothed like ``torch.nn.CrossEntropyLoss``
    (``(1 - label_smoothing)`` on the true class plus ``label_smoothing / C`` on
    every class), so ``gamma = 0`` is exactly cross-entropy. Larger ``gamma``
    down-weights examples the model already gets right with high confidence.
    """
    log_probs = F.log_softmax(logits, dim=1)
    num_classes = logits.shape[1]
    if gamma == 0:
        weighted = log_probs
    else:
        # 1 - p computed as -expm1(log p) stays accurate when p is close to 1; the clamp
        # keeps the gradient of (1 - p)^gamma finite for 0 < gamma < 1 when p rounds to 1.
        one_minus_p = (-torch.expm1(log_probs)).clamp_min(1e-12)
        weighted = one_minus_p.pow(gamma) * log_probs
    target = torch.full_like(log_probs, label_smoothing / num_classes)
    target.scatter_add_(1, labels.unsqueeze(1), torch.full_like(log_probs[:, :1], 1.0 - label_smoothing))
    return -(target * weighted).sum(dim=1).mean()


class FocalLoss(nn.Module):
    """Focal loss on raw logits (Lin et al., 2017), mean over the batch; see :func:`focal_loss`."""

    def __init__(self, gamma: float = 2.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean focal loss of the batch."""
        return focal_loss(logits, labels, self.gamma, self.label_smoothing)

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"gamma={self.gamma}, label_smoothing={self.label_smoothing}"


def focal(
    gamma: Annotated[float, Ge(0)] = 2.0,
    label_smoothing: Annotated[float, Ge(0), Lt(1)] = 0.0,
) -> nn.Module:
    """Focal loss on raw logits; gamma = 0 is cross-entropy."""
    return FocalLoss(gamma=gamma, label_smoothing=label_smoothing)


@hookimpl
def register_models() -> list[Model]:
    """The small CNN."""
    return [
        Model("small_cnn", small_cnn, "small CNN for 1x28x28 images: 2 conv+BN+ReLU+pool blocks, linear head, raw logits", output="logits"),
    ]  # fmt: skip


@hookimpl
def register_criteria() -> list[Criterion]:
    """The focal loss."""
    return [
        Criterion("focal", focal, "focal loss on raw logits: down-weights easy examples (gamma = 0 is cross-entropy)", expects=("logits",)),
    ]  # fmt: skip
