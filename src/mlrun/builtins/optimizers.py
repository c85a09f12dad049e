"""Built-in optimizers: SGD and Adam from torch.optim."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import torch
from annotated_types import Ge, Gt, Lt

from mlrun import Optimizer, hookimpl

Beta = Annotated[float, Ge(0), Lt(1)]


def sgd(
    params: Iterable[torch.nn.Parameter],
    lr: Annotated[float, Gt(0)] = 0.01,
    momentum: Annotated[float, Ge(0)] = 0.0,
    weight_decay: Annotated[float, Ge(0)] = 0.0,
    nesterov: bool = False,
    fused: bool = True,
) -> torch.optim.Optimizer:
    """Stochastic gradient descent (torch.optim.SGD); ``fused`` uses the one-kernel update."""
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
        fused=fused or None,
    )


def adam(
    params: Iterable[torch.nn.Parameter],
    lr: Annotated[float, Gt(0)] = 0.001,
    betas: tuple[Beta, Beta] = (0.9, 0.999),
    eps: Annotated[float, Gt(0)] = 1e-8,
    weight_decay: Annotated[float, Ge(0)] = 0.0,
    fused: bool = True,
) -> torch.optim.Optimizer:
    """Adam (torch.optim.Adam); ``fused`` uses the one-kernel update (faster, last-bit numerics differ)."""
    return torch.optim.Adam(
        params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused or None
    )


def _nesterov_needs_momentum(params: dict) -> None:
    if params["nesterov"] and params["momentum"] <= 0:
        raise ValueError("nesterov = true needs momentum > 0")


@hookimpl
def register_optimizers() -> list[Optimizer]:
    """SGD and Adam."""
    return [
        Optimizer("sgd", sgd, "stochastic gradient descent with optional momentum (torch.optim.SGD)", validate=_nesterov_needs_momentum),
        Optimizer("adam", adam, "Adam adaptive moment estimation (torch.optim.Adam)"),
    ]  # fmt: skip
