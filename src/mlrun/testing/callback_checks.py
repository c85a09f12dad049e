"""The behaviour check of a callback: its events run on a small fake run, and its state survives a checkpoint."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mlrun.callbacks import EpochInfo, FitEnd, RunInfo, StepInfo
from mlrun.components import Component


def check_callback(component: Component, values: dict[str, Any], context: Any) -> None:
    """Every event it has runs on a 3-step fake run; ``state_dict()`` goes through ``torch.save``/``load``
    with ``weights_only=True`` (as a checkpoint does) and a fresh instance takes it back unchanged.

    The fake run works in a temporary folder (its working directory too, for loggers with a local
    default store). A logger declared ``on_error="warn"`` may fail in its events (the engine warns).
    """
    where = f"callback '{component.name}'"
    tolerant = getattr(component, "on_error", "fail") == "warn"
    previous = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            callback = component.factory(**values)
            _fake_run(callback, Path(folder), where, tolerant=tolerant)
            state = callback.state_dict() if callable(getattr(callback, "state_dict", None)) else None
        finally:
            os.chdir(previous)
    if state is None:
        return
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
    except Exception as exc:
        raise AssertionError(
            f"{where}: state_dict() cannot go into a checkpoint (tensors and plain data only): {exc}"
        ) from exc
    fresh = component.factory(**values)
    fresh.load_state_dict(saved)
    if repr(fresh.state_dict()) != repr(state):
        raise AssertionError(f"{where}: load_state_dict(state_dict()) does not give the same state back")


def _fake_run(callback: Any, folder: Path, where: str, *, tolerant: bool) -> None:
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = RunInfo(folder, {"model": {"name": "linear"}}, model, 1, 3, 0, 1)
    figures = {"val_loss": 1.0, "val_accuracy": 0.5}
    events: list[tuple[str, tuple[Any, ...]]] = [("on_fit_start", ())]
    for step in range(1, 4):
        events.append(("on_step_end", (StepInfo(1, step, step, 1.0 / step, 0.1, None),)))
    events += [
        ("on_evaluate_end", (1, figures)),
        ("on_epoch_end", (EpochInfo(1, 0.5, figures, 0.1, 0.01),)),
        ("on_fit_end", (FitEnd("completed", "", None),)),
    ]
    for name, args in events:
        method = getattr(callback, name, None)
        if name == "on_step_end":
            model(torch.randn(8, 4)).pow(2).mean().backward()
            optimizer.step()
        if not callable(method):
            continue
        try:
            method(run, *args)
        except Exception as exc:
            if not tolerant:  # a warn-logger's failure only warns in a real run
                raise AssertionError(f"{where}: {name} raised {type(exc).__name__}: {exc}") from exc
