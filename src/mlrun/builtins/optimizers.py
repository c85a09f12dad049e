"""Built-in optimizers: every torch.optim optimizer that trains a module from its parameters.

``sgd`` and ``adam`` are written out by hand (their recipe defaults are mlrun's own:
SGD's lr is 0.01). The others are generated from torch's own signatures
(:func:`recipe_parameters`): each torch keyword argument with a default becomes a
typed recipe parameter with the same default, so the recipe parameters and torch
cannot drift apart. Left out on purpose:

* ``SparseAdam``: it updates only parameters with *sparse* gradients
  (``nn.Embedding(sparse=True)``); the dense gradients of ordinary layers are refused.
* ``LBFGS``: its ``step()`` needs a closure that re-evaluates the loss several times
  per step; the training loop calls ``optimizer.step()`` once, without one.

Every optimizer with a ``weight_decay`` also takes ``decay_bias_and_norm`` (default
true: one parameter group, exactly torch's behaviour). Set to false, biases, other 1-d
parameters and the weights of normalisation layers go into a second group with
``weight_decay = 0`` (see :func:`parameter_groups`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

import torch
from annotated_types import Ge, Gt, Lt

from mlrun import Optimizer, hookimpl

Beta = Annotated[float, Ge(0), Lt(1)]
Positive = Annotated[float, Gt(0)]
NonNegative = Annotated[float, Ge(0)]

#: torch arguments that choose an implementation, not a training hyper-parameter.
IMPLEMENTATION_SWITCHES = frozenset({"foreach", "capturable", "differentiable"})
#: Names whose value must be strictly positive (a step size, a division guard).
POSITIVE_NAMES = frozenset({"lr", "eps"})

#: The generated optimizers: recipe name, torch.optim class name, one-line summary.
GENERATED = (
    ("adamw", "AdamW", "Adam with decoupled weight decay (torch.optim.AdamW)"),
    ("rmsprop", "RMSprop", "RMSprop, a running average of squared gradients (torch.optim.RMSprop)"),
    ("radam", "RAdam", "rectified Adam, no warm-up needed (torch.optim.RAdam)"),
    ("nadam", "NAdam", "Adam with Nesterov momentum (torch.optim.NAdam)"),
    ("adagrad", "Adagrad", "per-parameter rates from accumulated squared gradients (torch.optim.Adagrad)"),
    ("adadelta", "Adadelta", "Adadelta, an adaptive rate without a hand-tuned lr (torch.optim.Adadelta)"),
    ("adamax", "Adamax", "Adam with the infinity norm (torch.optim.Adamax)"),
    ("asgd", "ASGD", "averaged stochastic gradient descent (torch.optim.ASGD)"),
)


# ------------------------------------------------------------------ parameter groups


def no_decay_parameters(model: torch.nn.Module) -> set[int]:
    """The ids of the parameters that should not be weight-decayed.

    Biases, every other 1-d parameter, and all parameters of normalisation layers
    (any module whose class name contains ``Norm``: BatchNorm, LayerNorm, GroupNorm,
    RMSNorm, InstanceNorm, ...).
    """
    found: set[int] = set()
    for module in model.modules():
        is_norm = "Norm" in type(module).__name__
        for name, param in module.named_parameters(recurse=False):
            if is_norm or name == "bias" or param.ndim <= 1:
                found.add(id(param))
    return found


def parameter_groups(
    params: Iterable[torch.nn.Parameter], model: torch.nn.Module | None, decay_bias_and_norm: bool
) -> Any:
    """What to hand to the optimizer: ``params`` itself, or a decayed and an undecayed group.

    With ``decay_bias_and_norm`` true, ``params`` is passed on untouched (one group, as
    torch builds it). Otherwise the parameters keep their order and are split into
    ``{"params": decayed}`` and ``{"params": the rest, "weight_decay": 0.0}``; an empty
    group is left out.
    """
    if decay_bias_and_norm:
        return params
    if model is None:
        raise ValueError("decay_bias_and_norm = false needs the model to find biases and norm layers")
    skip = no_decay_parameters(model)
    params = list(params)
    groups: list[dict[str, Any]] = [
        {"params": [p for p in params if id(p) not in skip]},
        {"params": [p for p in params if id(p) in skip], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]] or params


# ------------------------------------------------------------------ the hand-written two


def sgd(
    params: Iterable[torch.nn.Parameter],
    lr: Annotated[float, Gt(0)] = 0.01,
    momentum: Annotated[float, Ge(0)] = 0.0,
    weight_decay: Annotated[float, Ge(0)] = 0.0,
    nesterov: bool = False,
    fused: bool = True,
    decay_bias_and_norm: bool = True,
    *,
    model: torch.nn.Module | None = None,
) -> torch.optim.Optimizer:
    """Stochastic gradient descent (torch.optim.SGD); ``fused`` uses the one-kernel update."""
    return torch.optim.SGD(
        parameter_groups(params, model, decay_bias_and_norm), lr=lr, momentum=momentum,
        weight_decay=weight_decay, nesterov=nesterov, fused=fused or None,
    )  # fmt: skip


def adam(
    params: Iterable[torch.nn.Parameter],
    lr: Annotated[float, Gt(0)] = 0.001,
    betas: tuple[Beta, Beta] = (0.9, 0.999),
    eps: Annotated[float, Gt(0)] = 1e-8,
    weight_decay: Annotated[float, Ge(0)] = 0.0,
    fused: bool = True,
    decay_bias_and_norm: bool = True,
    *,
    model: torch.nn.Module | None = None,
) -> torch.optim.Optimizer:
    """Adam (torch.optim.Adam); ``fused`` uses the one-kernel update (faster, last-bit numerics differ)."""
    return torch.optim.Adam(
        parameter_groups(params, model, decay_bias_and_norm), lr=lr, betas=betas, eps=eps,
        weight_decay=weight_decay, fused=fused or None,
    )  # fmt: skip


def _nesterov_needs_momentum(params: Mapping[str, Any]) -> None:
    if params["nesterov"] and params["momentum"] <= 0:
        raise ValueError("nesterov = true needs momentum > 0")


# ------------------------------------------------------------------ generated from torch


def recipe_type(name: str, default: Any, torch_annotation: Any) -> tuple[Any, Any] | None:
    """The recipe annotation and default of one torch argument, or None to leave it to torch.

    ``lr`` and ``eps`` are floats > 0, ``betas`` two floats in [0, 1), booleans stay
    booleans, other numbers annotated (or defaulting to) float are floats >= 0 (an
    integer default such as ``weight_decay=0`` becomes ``0.0``), integers stay integers.
    None and other values (which TOML cannot hold) are left out.
    """
    if isinstance(default, bool):
        return bool, default
    if name == "betas" and isinstance(default, tuple) and len(default) == 2:
        return tuple[Beta, Beta], tuple(float(b) for b in default)
    if isinstance(default, float) or (isinstance(default, int) and "float" in str(torch_annotation)):
        return (Positive if name in POSITIVE_NAMES else NonNegative), float(default)
    if isinstance(default, int):
        return int, default
    return None


def fused_on_cpu(cls: type[torch.optim.Optimizer]) -> bool:
    """True when torch offers ``fused`` for this optimizer and its fused step runs on the CPU."""
    if "fused" not in inspect.signature(cls.__init__).parameters:
        return False
    weight = torch.nn.Parameter(torch.zeros(2))
    weight.grad = torch.ones(2)
    try:
        cls([weight], fused=True).step()  # type: ignore[call-arg]
    except (RuntimeError, ValueError, NotImplementedError):
        return False
    return True


def recipe_parameters(cls: type[torch.optim.Optimizer]) -> list[inspect.Parameter]:
    """The keyword-only recipe parameters of a torch optimizer, derived from its ``__init__``.

    Skips ``params``, the implementation switches and whatever :func:`recipe_type` leaves
    out; keeps ``fused`` (default true) only where the fused step runs on the CPU; adds
    ``decay_bias_and_norm`` when the optimizer has a ``weight_decay``.
    """
    keyword = inspect.Parameter.KEYWORD_ONLY
    found = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in ("self", "params", "fused") or p.name in IMPLEMENTATION_SWITCHES:
            continue
        typed = recipe_type(p.name, p.default, p.annotation)
        if typed is not None:
            found.append(inspect.Parameter(p.name, keyword, default=typed[1], annotation=typed[0]))
    if fused_on_cpu(cls):
        found.append(inspect.Parameter("fused", keyword, default=True, annotation=bool))
    if any(p.name == "weight_decay" for p in found):
        found.append(inspect.Parameter("decay_bias_and_norm", keyword, default=True, annotation=bool))
    return found


def make_factory(name: str, cls: type[torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    """A factory for ``cls`` whose ``__signature__`` and ``__annotations__`` are its recipe parameters.

    It takes ``params`` and, keyword-only, ``model`` (both from the engine) and the
    parameters of :func:`recipe_parameters`; ``fused = false`` leaves the choice to torch.
    """
    hyper = recipe_parameters(cls)

    def factory(
        params: Iterable[torch.nn.Parameter], *, model: torch.nn.Module | None = None, **settings: Any
    ) -> torch.optim.Optimizer:
        decay_bias_and_norm = settings.pop("decay_bias_and_norm", True)
        if "fused" in settings:
            settings["fused"] = settings["fused"] or None
        return cls(parameter_groups(params, model, decay_bias_and_norm), **settings)

    engine = [
        inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Iterable[torch.nn.Parameter]),
        inspect.Parameter("model", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=torch.nn.Module | None),
    ]  # fmt: skip
    factory.__signature__ = inspect.Signature(engine + hyper, return_annotation=torch.optim.Optimizer)  # type: ignore[attr-defined]
    factory.__annotations__ = {p.name: p.annotation for p in engine + hyper}
    factory.__annotations__["return"] = torch.optim.Optimizer
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"torch.optim.{cls.__name__}, with the recipe parameters of its signature."
    return factory


def torch_accepts(cls: type[torch.optim.Optimizer]) -> Callable[[Mapping[str, Any]], None]:
    """A recipe check: torch's own argument checks (``rho`` in [0, 1], ...) before anything is built."""

    def check(params: Mapping[str, Any]) -> None:
        settings = {k: v for k, v in params.items() if k not in ("fused", "decay_bias_and_norm")}
        try:
            cls([torch.nn.Parameter(torch.zeros(1))], **settings)
        except ValueError as exc:
            raise ValueError(f"torch.optim.{cls.__name__} refuses these settings: {exc}") from None

    return check


@functools.cache
def generated_optimizers() -> tuple[Optimizer, ...]:
    """The descriptors of :data:`GENERATED`, made once (their factories are cached by identity)."""
    return tuple(
        Optimizer(name, make_factory(name, getattr(torch.optim, cls)), summary, validate=torch_accepts(getattr(torch.optim, cls)))
        for name, cls, summary in GENERATED
    )  # fmt: skip


@hookimpl
def register_optimizers() -> list[Optimizer]:
    """SGD and Adam, and the other torch.optim optimizers generated from their signatures."""
    return [
        Optimizer("sgd", sgd, "stochastic gradient descent with optional momentum (torch.optim.SGD)", validate=_nesterov_needs_momentum),
        Optimizer("adam", adam, "Adam adaptive moment estimation (torch.optim.Adam)"),
        *generated_optimizers(),
    ]  # fmt: skip
