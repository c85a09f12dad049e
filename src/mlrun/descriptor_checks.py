"""Every field of a component descriptor, checked when its plugin loads.

A descriptor is data a plugin author writes by hand: a typo in it (``output="logit"``)
would otherwise surface much later, as a ``KeyError`` deep inside ``mlrun check``.
:func:`descriptor_problems` lists what is wrong with one descriptor, each problem
worded for the plugin's author with the fix; the registry refuses a descriptor with
problems and keeps the plugin's other components.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from mlrun.components import (
    INTERVALS,
    NAME_PATTERN,
    ON_ERRORS,
    OUTPUT_KINDS,
    Callback,
    Component,
    Criterion,
    Dataset,
    Metric,
    Model,
    Scheduler,
    Transform,
)
from mlrun.errors import did_you_mean
from mlrun.metrics import metric_problems
from mlrun.params import Parameter, SignatureError, parameters

#: The metrics a monitoring schedule (ReduceLROnPlateau-like) can be given.
MONITORED = ("loss", "accuracy")


def descriptor_problems(component: Component) -> list[str]:
    """What is wrong with one descriptor (empty when it is sound); no kind or name prefix."""
    problems = _base_problems(component)
    if problems:  # without a name or a readable signature the rest would only add noise
        return problems
    params = {p.name: p for p in parameters(component)}
    for cls, check in KIND_CHECKS:
        if isinstance(component, cls):
            problems += check(component, params)
    return problems


def _base_problems(component: Component) -> list[str]:
    name = component.name
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return [f"invalid name {name!r}: use lowercase letters, digits and underscores, starting with a letter"]
    if not callable(component.factory):
        return [f"factory must be callable, got {_shown(component.factory)}"]
    problems = []
    if not isinstance(component.summary, str) or not component.summary.strip():
        problems.append("summary must be a non-empty string (the one line `mlrun list` shows)")
    problems += _callable_problems("validate", component.validate, "the validated parameters")
    try:
        parameters(component)
    except SignatureError as exc:
        problems.append(_without_prefix(str(exc), component))
    except TypeError as exc:  # an unhashable factory cannot be cached by mlrun.params
        problems.append(f"factory cannot be used: {exc}")
    return problems


def _dataset(component: Any, params: dict[str, Parameter]) -> list[str]:
    problems = []
    classes = component.classes
    if not isinstance(classes, tuple) or not all(isinstance(c, str) and c.strip() for c in classes):
        problems.append(f"classes must be a tuple of class names (non-empty strings), got {_shown(classes)}")
    channels = component.channels
    if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
        problems.append(f"channels must be a positive integer (or None when not fixed), got {_shown(channels)}")
    problems += _callable_problems("tensors", component.tensors, "the built dataset")
    return problems


def _transform(component: Any, params: dict[str, Parameter]) -> list[str]:
    problems = _bool_problems("random", component.random) + _bool_problems("decode", component.decode)
    per_channel = component.per_channel
    if not isinstance(per_channel, tuple) or not all(isinstance(p, str) for p in per_channel):
        problems.append(f"per_channel must be a tuple of parameter names, got {_shown(per_channel)}")
    else:
        for name in per_channel:
            if name not in params:
                problems.append(
                    f"per_channel names '{name}', which is not a parameter of the factory"
                    f"{did_you_mean(name, params)} (parameters: {', '.join(params) or 'none'})"
                )
    batch = component.batch
    if batch is not None and not callable(batch):
        problems.append(f"batch must be a factory (a callable) or None, got {_shown(batch)}")
    elif batch is not None:
        problems += _batch_signature_problems(batch, params)
    return problems


def _batch_signature_problems(batch: Callable[..., Any], params: dict[str, Parameter]) -> list[str]:
    """The batch factory is called with the per-sample factory's recipe parameters, by keyword."""
    try:
        signature = inspect.signature(batch)
    except (TypeError, ValueError):
        return []  # a C function: nothing to read, so nothing to refuse
    try:
        signature.bind(**dict.fromkeys(params))
    except TypeError as exc:
        taken = ", ".join(signature.parameters) or "nothing"
        return [
            f"batch must take the same parameters as the factory ({', '.join(params) or 'none'}), "
            f"but it takes ({taken}): {exc}"
        ]
    return []


def _model(component: Any, params: dict[str, Parameter]) -> list[str]:
    output = component.output
    kinds = ", ".join(f"'{k}'" for k in OUTPUT_KINDS)
    if not isinstance(output, str):
        return [f"output must be one of {kinds} (or the name of a factory parameter), got {_shown(output)}"]
    if output in OUTPUT_KINDS:
        return []
    if output not in params:
        return [
            f"output '{output}' is not one of {kinds}{did_you_mean(output, [*OUTPUT_KINDS, *params])}; "
            "for a model whose output is configurable, name the factory parameter that chooses it"
        ]
    choices = literal_values(params[output].annotation)
    if choices is None or not choices or not set(choices) <= set(OUTPUT_KINDS):
        return [
            f"output names the factory parameter '{output}', which must be annotated "
            f'Literal[...] of some of {kinds} (e.g. output: Literal["logits", "log_probs"] = "logits")'
        ]
    return []


def _criterion(component: Any, params: dict[str, Parameter]) -> list[str]:
    expects = component.expects
    kinds = ", ".join(f"'{k}'" for k in OUTPUT_KINDS)
    if isinstance(expects, str):
        return [f"expects must be a tuple of model outputs, e.g. expects=({expects!r},), not a string"]
    if not isinstance(expects, tuple) or not expects:
        return [f"expects must list some of {kinds}, got {_shown(expects)}"]
    unknown = [e for e in expects if e not in OUTPUT_KINDS]
    return [f"expects {_shown(e)}, which is not one of {kinds}{did_you_mean(str(e), OUTPUT_KINDS)}" for e in unknown]


def _scheduler(component: Any, params: dict[str, Parameter]) -> list[str]:
    problems = _bool_problems("monitor", component.monitor)
    if component.interval not in INTERVALS:
        problems.append(
            f"interval must be 'step' or 'epoch', got {_shown(component.interval)}"
            f"{did_you_mean(str(component.interval), INTERVALS)}"
        )
    if component.monitor is True:
        if component.interval != "epoch":
            problems.append("a monitoring schedule steps once per epoch: set interval='epoch'")
        annotation = params["monitor"].annotation if "monitor" in params else None
        choices = literal_values(annotation) if annotation is not None else None
        if annotation is not str and (choices is None or not set(choices) <= set(MONITORED)):
            problems.append(
                'monitor=True needs a factory parameter \'monitor\' annotated Literal["loss", "accuracy"] '
                "or str (a figure such as 'val.loss'; the engine passes the value of the figure it names)"
            )
    return problems


def _callback(component: Any, params: dict[str, Parameter]) -> list[str]:
    problems = _bool_problems("logger", component.logger) + _bool_problems("all_ranks", component.all_ranks)
    on_error = component.on_error
    if on_error not in ON_ERRORS:
        problems.append(
            f"on_error must be 'fail' or 'warn', got {_shown(on_error)}{did_you_mean(str(on_error), ON_ERRORS)}"
        )
    elif on_error == "warn" and component.logger is not True:
        problems.append(
            "on_error='warn' is only for loggers (logger=True): a callback that changes training "
            "must fail the run when it breaks, or the run would silently differ"
        )
    if component.logger is True and component.all_ranks is True:
        problems.append("a logger runs on rank 0 only: all_ranks=True needs logger=False")
    return problems


KIND_CHECKS: tuple[tuple[type[Component], Callable[[Any, dict[str, Parameter]], list[str]]], ...] = (
    (Dataset, _dataset),
    (Transform, _transform),
    (Model, _model),
    (Criterion, _criterion),
    (Scheduler, _scheduler),
    (Metric, metric_problems),
    (Callback, _callback),
)


def _bool_problems(field: str, value: Any) -> list[str]:
    return [] if isinstance(value, bool) else [f"{field} must be True or False, got {_shown(value)}"]


def _callable_problems(field: str, value: Any, argument: str) -> list[str]:
    """``value`` must be None or a function mlrun can call with one argument."""
    if value is None:
        return []
    if not callable(value):
        return [f"{field} must be a function (or None), got {_shown(value)}"]
    try:
        inspect.signature(value).bind(None)
    except TypeError as exc:
        return [f"{field} must take one argument ({argument}): {exc}"]
    except ValueError:
        pass  # a C function: its signature cannot be read
    return []


def literal_values(annotation: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal[...]`` annotation (inside ``Annotated`` too), else None."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return None


def _without_prefix(message: str, component: Component) -> str:
    prefix = f"{component.kind} {component.name!r}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
