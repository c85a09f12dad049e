"""The hook specifications: the whole contract between mlrun and its plugins.

Every ``register_<kind>`` hook returns a list of component descriptors (see
:mod:`mlrun.components`); mlrun collects the lists of all plugins into one registry
per kind. Built-in components are registered through exactly these hooks.

A plugin may add a kind of its own: it declares the kind's hook spec with
``@hookspec`` in its plugin module, a descriptor class naming that hook, and returns
the class from :func:`register_kinds`. The kind then has a registry namespace, a
recipe section, and a place in ``mlrun list`` like the built-in ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from mlrun.components import Callback, Component, Criterion, Dataset, Metric, Model, Optimizer, Scheduler, Transform

PROJECT_NAME = "mlrun"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_datasets() -> list[Dataset]:
    """Return the datasets this plugin provides.

    A dataset factory receives ``train`` (which split) and ``transform`` (the
    composed transform pipeline) from the engine, plus its own recipe parameters,
    and returns a ``torch.utils.data.Dataset`` of ``(input, label)`` pairs.
    """


@hookspec
def register_transforms() -> list[Transform]:
    """Return the input transforms this plugin provides.

    A transform factory takes only recipe parameters and returns a callable that
    maps one sample (a PIL image or tensor) to a new sample, like a torchvision transform.
    """


@hookspec
def register_models() -> list[Model]:
    """Return the models this plugin provides.

    A model factory takes only recipe parameters and returns a ``torch.nn.Module``.
    Each model declares what its forward pass outputs (logits, log-probabilities or
    probabilities) so that mlrun can pair it with a fitting criterion.
    """


@hookspec
def register_criteria() -> list[Criterion]:
    """Return the loss functions (criteria) this plugin provides.

    A criterion factory takes only recipe parameters and returns a callable
    ``loss(output, labels) -> scalar tensor``. Each criterion declares which model
    outputs it expects.
    """


@hookspec
def register_optimizers() -> list[Optimizer]:
    """Return the optimizers this plugin provides.

    An optimizer factory receives ``params`` (the model's parameters) from the
    engine, plus its own recipe parameters, and returns a ``torch.optim.Optimizer``.
    """


@hookspec
def register_schedulers() -> list[Scheduler]:
    """Return the learning-rate schedulers this plugin provides.

    A scheduler factory receives ``optimizer`` from the engine (and ``steps_per_epoch``
    and ``epochs`` if it declares them), plus its own recipe parameters, and returns a
    ``torch.optim.lr_scheduler.LRScheduler`` (or anything with ``step()``,
    ``state_dict()`` and ``load_state_dict()``). Each scheduler declares whether it
    steps per optimizer step or per epoch, and whether it monitors a metric.
    """


@hookspec
def register_metrics() -> list[Metric]:
    """Return the evaluation metrics this plugin provides.

    A metric factory takes its recipe parameters (and ``num_classes``, the width of the
    model's output, if it declares it) and returns an :class:`mlrun.metrics.Accumulator`:
    ``update(scores, labels)`` per batch adds to tensors of sums or counts, ``state()``
    hands them over (summed across DDP ranks), ``compute(state)`` gives the figure and
    ``reset()`` starts again. Each metric declares whether higher is better, what it
    needs from the model output (any class scores, or probabilities) and whether its
    figure is one number (only those are printed each epoch and can be monitored).
    """


@hookspec
def register_callbacks() -> list[Callback]:
    """Return the callbacks this plugin provides.

    A callback factory takes only recipe parameters and returns an object with any of
    the events of :class:`mlrun.callbacks.CallbackProtocol` (``on_fit_start``,
    ``on_step_end``, ``on_evaluate_end``, ``on_epoch_end``, ``on_fit_end``) and, if it
    has state that a resumed run needs, ``state_dict()``/``load_state_dict()``. Each
    callback declares whether it is a logger (rank 0 only; may warn instead of failing
    the run) and whether it runs on every rank.
    """


@hookspec
def register_kinds() -> list[type[Component]]:
    """Return the new component kinds this plugin declares: descriptor classes.

    Each class subclasses :class:`mlrun.Component` and sets the ClassVars ``kind``,
    ``hook`` (a hook spec the same plugin module declares with ``@hookspec``),
    ``section`` (its recipe section), ``many``, ``required`` and ``injected``.
    A kind only adds components and a recipe section; what the engine does with
    them is up to the plugin that uses them.
    """
