"""Channel mismatches between data and model, explained before training (called by the probe).

A 3-channel network on grayscale images (or a 1-channel one on RGB images) fails in its
first convolution with torch's ``expected input[2, 1, 28, 28] to have 3 channels``. When
the probe's batch fails in the model, :func:`explain_channel_mismatch` finds the first
convolution the batch reaches and, if it wants another number of channels than the data
has, raises a :class:`UsageError` that says which and how to fix it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mlrun.errors import UsageError


class _Reached(Exception):
    """Raised by the hook on the first convolution, to stop the forward pass there."""


def first_convolution(model: nn.Module, inputs: torch.Tensor) -> tuple[nn.Conv2d, int] | None:
    """The first convolution ``inputs`` reach in ``model``, and how many channels arrive there."""
    found: list[tuple[nn.Conv2d, int]] = []

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        if isinstance(module, nn.Conv2d) and args and isinstance(args[0], torch.Tensor) and args[0].dim() >= 3:
            found.append((module, int(args[0].shape[-3])))
        raise _Reached

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(inputs)
    except _Reached:
        pass
    except Exception:  # noqa: BLE001 - it failed before any convolution: not a channel mismatch
        return None
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def explain_channel_mismatch(recipe: Any, model: nn.Module, inputs: Any, device: torch.device | None = None) -> None:
    """Raise a UsageError naming the fix when the model's first convolution wants other channels than the data has."""
    if not (isinstance(inputs, torch.Tensor) and inputs.dim() == 4 and inputs.is_floating_point()):
        return
    reached = first_convolution(model, inputs.to(device) if device is not None else inputs)
    if reached is None:
        return
    conv, arriving = reached
    data = int(inputs.shape[1])
    if arriving != data or conv.in_channels == data:
        return  # something before the convolution changed the channels, or they agree
    wanted = int(conv.in_channels)
    dataset, model_name = recipe.dataset.component.name, recipe.model.component.name
    raise UsageError(
        f"model '{model_name}' expects {wanted}-channel images but dataset '{dataset}' gives {data}-channel "
        f"ones (input batch {list(inputs.shape)})",
        problems=_fixes(recipe, wanted, data),
    )


def _fixes(recipe: Any, wanted: int, data: int) -> list[str]:
    fixes = []
    if wanted in (1, 3) and data in (1, 3):
        fixes.append(
            f'add [[transforms]] name = "grayscale", num_output_channels = {wanted} before "to_tensor" '
            + ("(3 equal channels from a grayscale image)" if wanted == 3 else "(RGB to one luminance channel)")
        )
    if "in_channels" in recipe.model.params:
        fixes.append(f"or set model.in_channels = {data}")
    if wanted == 3 and data == 1:
        mode = 'set dataset.mode = "RGB"' if "mode" in recipe.dataset.params else "load the images as RGB"
        fixes.append(f"or {mode} (if they are colour images)")
    return fixes
