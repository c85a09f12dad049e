"""What each kind of component must do when built: the behaviour checks of :mod:`mlrun.testing`.

**Random batch transforms.** A random transform's batch version need not give the same
numbers as the per-sample transform under the same seed (it may draw in another order;
drawing ``torch.rand(n, k)`` where the per-sample version draws ``torch.rand(k)`` n times
does match, on the CPU), but it must keep the rules the engine relies on to reproduce
and resume a run:

1. draw every random number inside the returned function, from torch's global generator
   (``torch.rand``, ``torch.randint``, ``torch.randperm`` ... without ``generator=``): never
   from Python's ``random`` or NumPy, and not once when the factory is called;
2. draw separately for each sample (``torch.rand(batch.shape[0])``), as the per-sample
   transform does, never once for the whole batch;
3. give each sample an output the per-sample transform could give it.

The kit checks that the output has the per-sample path's shape and dtype; that the same
torch seed gives the same batch whatever the state of Python's and NumPy's generators;
that copies of one sample are not all transformed alike when the per-sample transform
varies on it; and, when the per-sample transform has few outcomes (a flip, a crop), that
every output in the batch is one of them.
"""

from __future__ import annotations

import inspect
import random
import typing
import unittest
from collections.abc import Callable
from typing import Any

import torch

from mlrun.components import OUTPUT_KINDS, Component
from mlrun.errors import MlrunError
from mlrun.params import parameters
from mlrun.testing.callback_checks import check_callback  # noqa: F401 - found by behaviour_of, by kind
from mlrun.testing.support import Context, as_tensor, to_pil

Behaviour = Callable[[Component, dict[str, Any], Context], None]
#: How many copies of one sample the random-transform checks use, and per-sample draws.
COPIES, DRAWS = 32, 400


def behaviour_of(component: Component) -> tuple[str, Behaviour] | None:
    """The name and function of the check that builds and exercises ``component``, if any."""
    if component.kind == "transform":
        return ("batch", check_transform) if getattr(component, "batch", None) is not None else None
    found = {"model": "output", "criterion": "loss", "dataset": "samples", "optimizer": "step", "scheduler": "step",
             "metric": "sums", "callback": "events"}  # fmt: skip
    name = found.get(component.kind)
    return (name, globals()[f"check_{component.kind}"]) if name else None


# ------------------------------------------------------------------ models and criteria


def check_model(component: Component, values: dict[str, Any], context: Context) -> None:
    """On the sample batch, the output is ``N x classes``, finite and of the declared kind."""
    declared = getattr(component, "output", "logits")
    choices = [declared] if declared in OUTPUT_KINDS else _output_choices(component, values)
    inputs = context.model_input()
    for kind in choices:
        chosen = values if declared in OUTPUT_KINDS else {**values, declared: kind}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = component.factory(**chosen)
            model.eval()
            with torch.no_grad():
                output = model(inputs.clone())
        problem = output_problem(output, kind, len(inputs))
        if problem:
            how = "" if declared in OUTPUT_KINDS else f" (built with {declared}={kind!r})"
            raise AssertionError(f"model '{component.name}'{how}: {problem}")


def _output_choices(component: Component, values: dict[str, Any]) -> list[str]:
    """Every output kind a model with a configurable ``output`` can be built with."""
    name = getattr(component, "output", "")
    param = next((p for p in parameters(component) if p.name == name), None)
    if param is None:
        raise AssertionError(f"model '{component.name}': output={name!r} is neither an output kind nor a parameter")
    base = typing.get_args(param.annotation)[0] if typing.get_origin(param.annotation) is typing.Annotated else None
    literal = base if base is not None else param.annotation
    if typing.get_origin(literal) is typing.Literal:
        return [str(choice) for choice in typing.get_args(literal)]
    return [str(values[name])]


def output_problem(output: Any, kind: str, rows: int) -> str | None:
    """What is wrong with a model's output for its declared ``kind``, or None."""
    if kind not in OUTPUT_KINDS:
        return f"declares output {kind!r}, which is not one of {', '.join(OUTPUT_KINDS)}"
    if not isinstance(output, torch.Tensor):
        return f"returned {type(output).__name__}; expected a tensor of shape (N, classes)"
    if output.dim() != 2 or output.shape[0] != rows or output.shape[1] < 2:
        return f"output shape {tuple(output.shape)} for {rows} samples; expected ({rows}, classes) with classes >= 2"
    if not output.is_floating_point() or not torch.isfinite(output).all():
        return f"output must be finite floats, got {output.dtype} with {int((~torch.isfinite(output)).sum())} inf/nan"
    values = output.double()
    sums = {"log_probs": values.exp().sum(1), "probs": values.sum(1)}
    ones, looks = torch.ones(rows, dtype=values.dtype), _looks_like(values)
    if kind == "log_probs" and (values.max() > 1e-6 or not torch.allclose(sums[kind], ones, atol=1e-4)):
        return (
            f"declares log_probs, but exp(output) rows sum to {_few(sums[kind])} (expected 1): it looks like "
            f"{looks}; declare output={looks!r}, or end the model with log_softmax(dim=1)"
        )
    if kind == "probs" and (values.min() < 0 or not torch.allclose(sums[kind], ones, atol=1e-4)):
        return (
            f"declares probs, but its rows sum to {_few(sums[kind])} (expected 1, each >= 0): it looks like "
            f"{looks}; declare output={looks!r}, or end the model with softmax(dim=1)"
        )
    if kind == "logits" and looks == "probs":
        return (
            "declares logits, but every row is a probability distribution (>= 0, sums to 1): "
            "declare output='probs', or remove the final softmax"
        )
    return None


def _looks_like(values: torch.Tensor) -> str:
    ones = torch.ones(len(values), dtype=values.dtype)
    if values.min() >= 0 and torch.allclose(values.sum(1), ones, atol=1e-4):
        return "probs"
    if values.max() <= 1e-6 and torch.allclose(values.exp().sum(1), ones, atol=1e-4):
        return "log_probs"
    return "logits"


def _few(values: torch.Tensor) -> str:
    return ", ".join(f"{v:.4g}" for v in values[:3].tolist()) + (", ..." if len(values) > 3 else "")


def check_criterion(component: Component, values: dict[str, Any], context: Context) -> None:
    """A finite scalar loss, with finite gradients, for each output kind the criterion expects."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        criterion = component.factory(**values)
        logits = torch.randn(8, 10, requires_grad=True)
        labels = torch.arange(8) % 10
        for kind in getattr(component, "expects", ("logits",)):
            inputs = {"logits": logits, "log_probs": logits.log_softmax(1), "probs": logits.softmax(1)}[kind]
            loss = criterion(inputs, labels)
            where = f"criterion '{component.name}' on {kind}"
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not torch.isfinite(loss).all():
                raise AssertionError(f"{where}: expected a finite scalar tensor, got {loss!r:.80}")
            (grad,) = torch.autograd.grad(loss.sum(), logits)
            if not torch.isfinite(grad).all():
                raise AssertionError(f"{where}: the loss's gradient has inf or nan")


# ------------------------------------------------------------------ transforms


def check_transform(component: Component, values: dict[str, Any], context: Context) -> None:
    """The batch version gives what the per-sample transform gives on each sample."""
    where = f"transform '{component.name}'"
    per_sample, batch = component.factory(**values), component.batch(**values)  # type: ignore[attr-defined]
    form, samples, stacked = _input_form(per_sample, context, where)
    random_ = getattr(component, "random", False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        expected = torch.stack([as_tensor(per_sample(sample)) for sample in samples])
        got = batch(stacked.clone())
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise AssertionError(
            f"{where}: on {form}, the batch version gives {shape} {getattr(got, 'dtype', '')}, the per-sample "
            f"transform {tuple(expected.shape)} {expected.dtype} once stacked; they must match"
        )
    if not random_:
        _same(expected, got, f"{where}: on {form}, the batch version differs from the per-sample transform")
        return
    _check_random_batch(where, per_sample, batch, samples[0], stacked[:1])


def _input_form(per_sample: Callable[[Any], Any], context: Context, where: str) -> tuple[str, list[Any], torch.Tensor]:
    """The first input the per-sample transform accepts: raw images (PIL per sample), or float tensors."""
    images, floats = context.images, context.model_input()
    forms = [
        ("raw images (a PIL image per sample, uint8 N x H x W in a batch)", [to_pil(x) for x in images], images),
        ("float image tensors (C x H x W per sample)", list(floats), floats),
    ]
    errors = []
    for form, samples, stacked in forms:
        try:
            with torch.random.fork_rng(devices=[]):
                for seed in range(8):  # a random transform may fail on a form only sometimes
                    torch.manual_seed(seed)
                    as_tensor(per_sample(samples[0]))
        except Exception as exc:  # noqa: BLE001 - not this form; try the next
            errors.append(f"{form}: {type(exc).__name__}: {exc}")
            continue
        return form, samples, stacked
    raise unittest.SkipTest(f"{where}: the per-sample transform took none of the sample inputs ({'; '.join(errors)})")


def _same(expected: torch.Tensor, got: torch.Tensor, message: str) -> None:
    close = torch.allclose if expected.is_floating_point() else lambda a, b, **_: torch.equal(a, b)
    for index, (one, other) in enumerate(zip(expected, got)):
        if not close(one, other, rtol=1e-5, atol=1e-6):
            gap = (one.double() - other.double()).abs().max().item()
            raise AssertionError(f"{message} at sample {index} (largest difference {gap:.4g})")


def _check_random_batch(where: str, per_sample: Any, batch: Any, sample: Any, raw: torch.Tensor) -> None:
    """The rules of the module docstring, on copies of one sample."""
    copies = raw.expand(COPIES, *raw.shape[1:]).contiguous()
    runs = []
    for other_seed in (1, 2):  # the same torch seed; Python's and NumPy's generators differ
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            random.seed(other_seed)
            _seed_numpy(other_seed)
            runs.append(batch(copies.clone()))
    if not torch.equal(runs[0], runs[1]):
        raise AssertionError(
            f"{where}: the same torch seed gave two different batches: draw random numbers from torch's "
            "global generator (torch.rand, torch.randint...), not from Python's random or NumPy"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        outcomes = _distinct([as_tensor(per_sample(sample)) for _ in range(DRAWS)])
    rows = _distinct(list(runs[0]))
    if len(outcomes) > 1 and len(rows) == 1:
        raise AssertionError(
            f"{where}: the batch version transformed {COPIES} copies of a sample all alike, while the "
            "per-sample transform varies: draw separately for each sample, e.g. torch.rand(batch.shape[0])"
        )
    if len(outcomes) <= DRAWS // 8:  # few outcomes, all seen: each output must be one of them
        for index, row in enumerate(runs[0]):
            if not any(_equal(row, outcome) for outcome in outcomes):
                raise AssertionError(
                    f"{where}: copy {index} of a sample came out in a way the per-sample transform never gives "
                    f"it ({len(outcomes)} different outcomes in {DRAWS} draws)"
                )


def _seed_numpy(seed: int) -> None:
    try:
        import numpy
    except ImportError:  # pragma: no cover - torchvision needs NumPy
        return
    numpy.random.seed(seed)


def _equal(one: torch.Tensor, other: torch.Tensor) -> bool:
    if one.is_floating_point():
        return torch.allclose(one, other, rtol=1e-5, atol=1e-6)
    return torch.equal(one, other)


def _distinct(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for tensor in tensors:
        if not any(_equal(tensor, seen) for seen in found):
            found.append(tensor)
    return found


# ------------------------------------------------------------------ datasets, optimizers, schedulers


def check_dataset(component: Component, values: dict[str, Any], context: Context) -> None:
    """Each split builds; its items are ``(sample, label)``; ``tensors()`` match the first samples."""
    where = f"dataset '{component.name}'"
    for train in (True, False):
        try:
            data = component.factory(train=train, transform=None, **values)
        except MlrunError as exc:  # its files are not here: mlrun's own advice says why
            raise unittest.SkipTest(f"{where}: could not be built here: {exc.render()}") from None
        split = f"{where} ({'train' if train else 'test'} split)"
        if len(data) == 0 or not isinstance(data[0], (tuple, list)) or len(data[0]) != 2:
            raise AssertionError(f"{split}: expected a non-empty dataset of (sample, label) pairs")
        tensors = getattr(component, "tensors", None)
        if tensors is not None:
            _check_tensors(split, data, tensors(data), len(getattr(component, "classes", ())))


def _check_tensors(where: str, data: Any, pair: Any, classes: int) -> None:
    samples, labels = pair
    if labels.dim() != 1 or labels.is_floating_point() or not len(samples) == len(labels) == len(data):
        raise AssertionError(
            f"{where}: tensors() must give N samples and a 1-d integer tensor of N labels for its "
            f"{len(data)} items, got {tuple(samples.shape)} and {tuple(labels.shape)} {labels.dtype}"
        )
    if classes and len(labels) and int(labels.max()) >= classes:
        raise AssertionError(f"{where}: label {int(labels.max())} is out of range for its {classes} classes")
    for index in range(min(8, len(data))):
        sample, label = data[index]
        if int(label) != int(labels[index]):
            raise AssertionError(f"{where}: item {index} has label {int(label)}, tensors() says {int(labels[index])}")
        if not _equal(as_tensor(sample), samples[index]):
            raise AssertionError(f"{where}: item {index}'s sample differs from tensors()'s sample {index}")


def check_optimizer(component: Component, values: dict[str, Any], context: Context) -> None:
    """Built on a small model's parameters, one step changes the weights and keeps them finite."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        extra = {"model": model} if "model" in inspect.signature(component.factory).parameters else {}
        optimizer = component.factory(params=model.parameters(), **extra, **values)
        before = model.weight.detach().clone()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
    if torch.equal(before, model.weight) or not torch.isfinite(model.weight).all():
        raise AssertionError(f"optimizer '{component.name}': a step left the weights unchanged, or not finite")


def check_scheduler(component: Component, values: dict[str, Any], context: Context) -> None:
    """Built on an optimizer, it steps through a short run with finite, non-negative rates."""
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    declared = inspect.signature(component.factory).parameters
    extra = {k: v for k, v in (("steps_per_epoch", 5), ("epochs", 3)) if k in declared}
    scheduler = component.factory(optimizer=optimizer, **extra, **values)
    for _ in range(5):
        optimizer.step()
        scheduler.step(1.0) if getattr(component, "monitor", False) else scheduler.step()
    rates = [group["lr"] for group in optimizer.param_groups]
    if not all(rate >= 0 and rate == rate and rate != float("inf") for rate in rates):
        raise AssertionError(f"scheduler '{component.name}': after 5 steps the learning rates are {rates}")


def check_metric(component: Component, values: dict[str, Any], context: Context) -> None:
    """Two shards' summed states give the figure of the whole (exact under DDP); ``reset`` forgets."""
    where = f"metric '{component.name}'"
    extra = {"num_classes": 5} if "num_classes" in inspect.signature(component.factory).parameters else {}
    generator = torch.Generator().manual_seed(0)
    scores, labels = torch.randn(40, 5, generator=generator), torch.randint(0, 5, (40,), generator=generator)
    if getattr(component, "needs", "scores") == "probs":
        scores = scores.softmax(dim=1)
    whole, parts = component.factory(**extra, **values), component.factory(**extra, **values)
    whole.update(scores, labels)
    state = {key: tensor.clone() for key, tensor in parts.state().items()}
    parts.update(scores[:13], labels[:13])
    first = {key: tensor.clone() for key, tensor in parts.state().items()}
    parts.reset()
    if any(not torch.equal(tensor, state[key]) for key, tensor in parts.state().items()):
        raise AssertionError(f"{where}: reset() does not give back the empty state")
    parts.update(scores[13:], labels[13:])
    summed = {key: first[key] + tensor for key, tensor in parts.state().items()}
    expected, got = whole.compute(whole.state()), whole.compute(summed)
    if repr(expected) != repr(got):
        raise AssertionError(
            f"{where}: the summed states of two shards give {got!r:.80}, the whole gives {expected!r:.80}: "
            "accumulate sums or counts (never means), so that ranks add up exactly"
        )
