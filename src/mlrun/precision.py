"""Numeric precision of a training step: float32, bfloat16 autocast, or float16 with a gradient scaler.

``train.precision = "32"`` (the default) adds nothing to the step: the numbers are
exactly those of plain float32 training. ``"bf16"`` runs forward and loss under
``torch.autocast`` with bfloat16 (CPUs support it); ``"16"`` uses float16 with a
``GradScaler``, which needs CUDA (refused elsewhere by the pre-flight).
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Iterator
from typing import Any

import torch


class Precision:
    """Autocast, scaled backward and the optimizer step (with optional clipping) for one setting."""

    def __init__(self, setting: str, device: torch.device) -> None:
        self.setting, self.device = setting, device
        self.scaler = torch.amp.GradScaler(device.type) if setting == "16" else None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forward pass and loss in this precision (nothing at all for float32)."""
        if self.setting == "32":
            yield
            return
        dtype = torch.bfloat16 if self.setting == "bf16" else torch.float16
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """Compute gradients; float16 scales the loss first so small gradients do not vanish."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module, max_norm: float) -> float:
        """Clip (when ``max_norm`` > 0) and update the weights; returns the gradient norm, or NaN."""
        norm = math.nan
        if max_norm > 0:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            norm = clip_grad_norm(model, max_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return norm

    def state_dict(self) -> dict[str, Any] | None:
        """The gradient scaler's state for the checkpoint (None without one)."""
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from a :meth:`state_dict`."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> float:
    """Scale the gradients so their global L2 norm is at most ``max_norm``; returns the norm before.

    The same operations as ``torch.nn.utils.clip_grad_norm_`` (so the same bits), without its
    per-call grouping and checks, which cost a quarter of a small model's step on a CPU.
    Gradients of mixed devices or dtypes take torch's own function.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    first = grads[0]
    if any(g.device != first.device or g.dtype != first.dtype or g.is_sparse for g in grads):
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    with torch.no_grad():
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return float(total)


def compile_problem(device: torch.device) -> str | None:
    """Why ``train.compile`` cannot work on this device, or None.

    Inductor builds C++ kernels on the CPU: without a compiler the run would fail at its
    first step, after the data is loaded, with a long internal traceback.
    """
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        return (
            "train.compile = true needs a C++ compiler on the CPU (torch.compile builds C++ kernels): "
            "install one (e.g. `apt-get install g++`) or set compile = false"
        )
    return None
