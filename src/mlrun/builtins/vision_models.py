"""Built-in model: torchvision's classification architectures, by name.

``[model] name = "torchvision"`` with ``arch = "resnet18"`` builds any architecture of
``torchvision.models.list_models(module=torchvision.models)`` (classification only),
with ``num_classes`` outputs (raw logits) and ``in_channels`` 1 or 3 input channels.

``pretrained = true`` loads the architecture's default ImageNet weights, but only from
the local torch cache (``torch.hub.get_dir()/checkpoints``): mlrun never downloads. The
weights' 1000-class head is replaced by a fresh ``num_classes`` one, and for
``in_channels = 1`` the first convolution's filters are summed over the RGB channels
(a grayscale image then gives what its RGB copy would give the pretrained network).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge
from torch import nn

from mlrun import Model, hookimpl

#: Architectures whose builders add auxiliary classifiers (a tuple output while training) by default.
_AUX_LOGITS = frozenset({"googlenet", "inception_v3"})


@functools.cache
def architectures() -> tuple[str, ...]:
    """The classification architectures of torchvision (detection, segmentation... excluded)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def weights_path(arch: str) -> tuple[Path, str]:
    """Where the default pretrained weights of ``arch`` must be, and the URL they come from."""
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    url = str(weights.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def _check(params: Mapping[str, Any]) -> None:
    """A known architecture, and pretrained weights already in the local cache."""
    arch = params["arch"]
    if arch not in architectures():
        close = difflib.get_close_matches(arch, architectures(), n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            f"arch: unknown torchvision classification architecture {arch!r}{hint} "
            f"(see torchvision.models.list_models(); e.g. resnet18, mobilenet_v3_small, squeezenet1_1)"
        )
    if params["pretrained"]:
        path, url = weights_path(arch)
        if not path.is_file():
            raise ValueError(_missing_weights(arch, path, url))


def _missing_weights(arch: str, path: Path, url: str) -> str:
    return (
        f"pretrained: the {arch} weights are not in the local torch cache and mlrun never downloads; "
        f"put the file at {path} (download it from {url} on a machine with network access), "
        "or set pretrained = false"
    )


def torchvision_model(
    arch: str = "resnet18",
    num_classes: Annotated[int, Ge(2)] = 10,
    in_channels: Literal[1, 3] = 3,
    pretrained: bool = False,
) -> nn.Module:
    """A torchvision classification network with ``num_classes`` logits and ``in_channels`` inputs."""
    import torchvision

    _check({"arch": arch, "pretrained": pretrained})  # recipes are checked before; a direct call is too
    extra = {"aux_logits": False, "init_weights": True} if arch in _AUX_LOGITS else {}
    if not pretrained:
        model = torchvision.models.get_model(arch, num_classes=num_classes, **extra)
    else:
        model = _pretrained(arch, extra)
        categories = len(torchvision.models.get_model_weights(arch).DEFAULT.meta["categories"])
        if num_classes != categories:
            _replace_head(model, categories, num_classes)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels, keep_weights=pretrained)
    return model


def _pretrained(arch: str, extra: dict[str, Any]) -> nn.Module:
    """The architecture with its default weights, read from the cache only (weights_only).

    Raises ValueError (mlrun reports it as bad input, before training) when the file is
    missing or holds other weights.
    """
    import torchvision

    path, url = weights_path(arch)
    if not path.is_file():
        raise ValueError(_missing_weights(arch, path, url))
    categories = len(torchvision.models.get_model_weights(arch).DEFAULT.meta["categories"])
    model = torchvision.models.get_model(arch, num_classes=categories, **extra)
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Checkpoints of architectures built with aux_logits carry those heads too; they are not used.
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or any(not key.startswith("aux") for key in unexpected):
        raise ValueError(
            f"{path}: not the {arch} weights (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            f"replace it with the file from {url}"
        )
    return model


def _replace_head(model: nn.Module, categories: int, num_classes: int) -> None:
    """Swap the last layer that outputs the weights' ``categories`` for a fresh ``num_classes`` one."""
    name, layer = [
        (n, m) for n, m in model.named_modules()
        if (isinstance(m, nn.Linear) and m.out_features == categories)
        or (isinstance(m, nn.Conv2d) and m.out_channels == categories)
    ][-1]  # fmt: skip
    spec: Any = layer  # a Linear, or squeezenet's 1x1 convolution
    if isinstance(layer, nn.Linear):
        new: nn.Module = nn.Linear(spec.in_features, num_classes, bias=spec.bias is not None)
    else:
        new = nn.Conv2d(spec.in_channels, num_classes, spec.kernel_size, spec.stride, spec.padding)
    _set(model, name, new)


def _adapt_first_conv(model: nn.Module, in_channels: int, *, keep_weights: bool) -> None:
    """Give the first convolution ``in_channels`` inputs (pretrained RGB filters summed for 1)."""
    name, first = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    conv: Any = first
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
    )  # fmt: skip
    if keep_weights:
        with torch.no_grad():
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
            if conv.bias is not None and new.bias is not None:
                new.bias.copy_(conv.bias)
    _set(model, name, new)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def expected_channels(model: nn.Module) -> int | None:
    """The input channels of a network's first convolution, or None (no convolution)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else None


@hookimpl
def register_models() -> list[Model]:
    """Every torchvision classification architecture, through one component."""
    return [
        Model("torchvision", torchvision_model, "a torchvision classification network by arch (resnet18, mobilenet_v3_small...), logits", validate=_check, output="logits"),
    ]  # fmt: skip
