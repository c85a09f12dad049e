"""Component descriptors: what a plugin returns from its hooks, and the kinds they declare.

A component is a named factory plus what mlrun needs to know about it before
calling it: a one-line summary, and for models and criteria what they output and
expect. The factory's type-annotated keyword parameters are the component's recipe
parameters; see :mod:`mlrun.params`. Every field is checked when the plugin loads
(:mod:`mlrun.descriptor_checks`): a descriptor with a mistake is refused, with the
plugin and component named, and the plugin's other components still load.

Each descriptor class also declares its **kind**, once: the hook that returns its
components, the recipe section that names them (one table, or a list of tables),
whether a recipe must have that section, and the factory arguments the engine
injects. The registry, recipe validation, ``mlrun list``/``plugins`` and the run log
read these declarations instead of listing kinds by hand, so a plugin can add a
kind of its own (see :func:`mlrun.hookspecs.register_kinds`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, get_args

#: What a model's forward pass returns, and what a criterion expects as input.
OutputKind = Literal["logits", "log_probs", "probs"]
OUTPUT_KINDS: tuple[str, ...] = get_args(OutputKind)

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Component:
    """Base of every descriptor: a registered name, its factory and a one-line summary."""

    name: str
    factory: Callable[..., Any]
    summary: str
    #: Optional check of parameter combinations that types cannot express: called with
    #: the validated parameters before anything is built; raises ValueError with advice.
    validate: Callable[[Mapping[str, Any]], None] | None = None

    #: The component kind, as written in recipes and shown by ``mlrun list``.
    kind: ClassVar[str] = ""
    #: The hook spec whose implementations return this kind's descriptors.
    hook: ClassVar[str] = ""
    #: The recipe section naming the chosen component(s): ``[model]``, ``[[transforms]]``.
    section: ClassVar[str] = ""
    #: True when the section is a list of components (``[[transforms]]``), not one table.
    many: ClassVar[bool] = False
    #: True when every recipe must have the section.
    required: ClassVar[bool] = True
    #: Factory arguments the engine supplies itself; recipes never set them.
    injected: ClassVar[frozenset[str]] = frozenset()
    #: Arguments the engine supplies only to factories that declare them (never recipe keys).
    optional_injected: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        # Lists where tuples are meant (classes=[...]) are a natural slip: take them as tuples,
        # so the descriptor stays hashable. Everything else is checked when the plugin loads
        # (mlrun.descriptor_checks), where a bad descriptor costs only itself, not its siblings.
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, list):
                object.__setattr__(self, spec.name, tuple(value))


@dataclass(frozen=True)
class Dataset(Component):
    """A dataset. Its factory gets ``train: bool`` and ``transform`` (and ``split``, if declared) from the engine.

    ``classes`` names the labels in order (shown by predictions); leave it empty if
    unknown. ``channels`` is the number of image channels, if fixed: per-channel
    transform parameters (such as normalize's mean and std) are checked against it.

    ``tensors`` opts the dataset into the in-memory fast path: given a built dataset,
    it returns ``(samples, labels)``, the raw samples stacked in one tensor exactly as
    the first transform would receive them one by one (e.g. uint8 ``N x H x W`` for
    grayscale images), and the labels as a 1-d integer tensor.

    A factory that declares ``split`` provides its own validation split: the engine
    calls it with ``split = "train"``, ``"val"`` or ``"test"`` (``train`` is True for the
    first two), and evaluates every epoch on ``"val"``, which then wins over
    ``train.val_fraction``.

    A factory that declares ``decode`` caches decoded images (see :mod:`mlrun.decode_stage`):
    it gets the recipe's leading ``decode`` transforms as one :class:`~mlrun.decode_stage.DecodeStage`,
    to apply once per image, and ``transform`` gets only the transforms after them.
    """

    classes: tuple[str, ...] = ()
    channels: int | None = None
    tensors: Callable[[Any], tuple[Any, Any]] | None = None

    kind: ClassVar[str] = "dataset"
    hook: ClassVar[str] = "register_datasets"
    section: ClassVar[str] = "dataset"
    injected: ClassVar[frozenset[str]] = frozenset({"train", "transform"})
    optional_injected: ClassVar[frozenset[str]] = frozenset({"split", "decode"})


@dataclass(frozen=True)
class Transform(Component):
    """A per-sample input transform.

    ``random`` marks augmentations: they apply to the training split only, never
    to evaluation, and are never cached. ``per_channel`` names the parameters that
    hold one value per image channel; a single value (applied to every channel) is
    accepted too.
    """

    random: bool = False
    per_channel: tuple[str, ...] = ()
    #: Batch version for the in-memory fast path: a factory taking the same parameters
    #: and returning a function on a whole batch (first dimension = samples) that gives
    #: the same result as applying the per-sample transform to each sample. The engine
    #: passes each batch function a tensor of its own, so it may modify it in place.
    batch: Callable[..., Callable[[Any], Any]] | None = None
    #: A deterministic transform of the decoded image (a PIL image) that a caching dataset
    #: may apply once, before caching: the leading run of decode transforms is then done
    #: at decode time, and only the transforms after it need batch versions.
    decode: bool = False

    kind: ClassVar[str] = "transform"
    hook: ClassVar[str] = "register_transforms"
    section: ClassVar[str] = "transforms"
    many: ClassVar[bool] = True
    required: ClassVar[bool] = False


@dataclass(frozen=True)
class Model(Component):
    """A model. ``output`` says what its forward pass returns.

    ``output`` is one of ``"logits"``, ``"log_probs"``, ``"probs"``, or the name of
    one of the factory's parameters whose value is one of those (for models whose
    output is configurable).
    """

    output: str = "logits"

    kind: ClassVar[str] = "model"
    hook: ClassVar[str] = "register_models"
    section: ClassVar[str] = "model"

    def output_kind(self, params: Mapping[str, Any]) -> str:
        """What this model outputs when built with the given (validated) parameters."""
        if self.output in OUTPUT_KINDS:
            return self.output
        return str(params[self.output])


@dataclass(frozen=True)
class Criterion(Component):
    """A loss function. ``expects`` lists the model outputs it is correct for."""

    expects: tuple[str, ...] = ("logits",)

    kind: ClassVar[str] = "criterion"
    hook: ClassVar[str] = "register_criteria"
    section: ClassVar[str] = "criterion"


@dataclass(frozen=True)
class Optimizer(Component):
    """An optimizer. Its factory gets ``params`` (the model's parameters) from the engine.

    A factory that also declares ``model`` gets the model, to build parameter groups
    (e.g. no weight decay on biases and normalisation weights).
    """

    kind: ClassVar[str] = "optimizer"
    hook: ClassVar[str] = "register_optimizers"
    section: ClassVar[str] = "optimizer"
    injected: ClassVar[frozenset[str]] = frozenset({"params"})
    optional_injected: ClassVar[frozenset[str]] = frozenset({"model"})


#: When a scheduler steps: after every optimizer step, or after each epoch's evaluation.
Interval = Literal["step", "epoch"]
INTERVALS: tuple[str, ...] = get_args(Interval)


@dataclass(frozen=True)
class Scheduler(Component):
    """A learning-rate schedule. Its factory gets ``optimizer`` from the engine and, when it
    declares them, ``steps_per_epoch`` (optimizer steps per epoch) and ``epochs``, so a
    recipe never computes a total number of steps by hand.

    ``interval`` says when the engine steps it: ``"step"`` after every optimizer step,
    ``"epoch"`` after each epoch's evaluation. ``monitor`` marks schedules that step on
    a monitored value (like ReduceLROnPlateau): the engine passes the value of the
    figure named by the factory's ``monitor`` parameter: ``"loss"`` or ``"accuracy"`` of
    the split evaluated each epoch, or a split's figure such as ``"val.loss"`` or
    ``"val.macro_f1"`` (annotate it ``str`` to accept those).
    A factory raises ``ValueError`` for a combination it cannot honour (a warmup longer
    than the run); mlrun reports it as bad input, before training.
    """

    interval: str = "step"
    monitor: bool = False

    kind: ClassVar[str] = "scheduler"
    hook: ClassVar[str] = "register_schedulers"
    section: ClassVar[str] = "scheduler"
    required: ClassVar[bool] = False
    injected: ClassVar[frozenset[str]] = frozenset({"optimizer"})
    optional_injected: ClassVar[frozenset[str]] = frozenset({"steps_per_epoch", "epochs"})


#: What a metric needs from the model output. ``"scores"``: any class scores (logits,
#: log-probabilities or probabilities rank the classes alike, so argmax metrics take any);
#: ``"probs"``: calibrated probabilities (the engine converts; see :func:`mlrun.metrics.as_probabilities`).
Needs = Literal["scores", "probs"]
NEEDS: tuple[str, ...] = get_args(Needs)


@dataclass(frozen=True)
class Metric(Component):
    """An evaluation metric. Its factory returns an :class:`mlrun.metrics.Accumulator`.

    ``higher_is_better`` gives the monitoring mode (``max`` or ``min``). ``needs`` says what
    the metric reads from the model output (see :data:`Needs`). ``scalar`` is False for
    figures with one value per class or a matrix: they are stored (``run.json``,
    ``evaluation.json``), not printed every epoch, and cannot be monitored. A factory
    that declares ``num_classes`` gets the width of the model's output from the engine.
    """

    higher_is_better: bool = True
    needs: Needs = "scores"
    scalar: bool = True

    kind: ClassVar[str] = "metric"
    hook: ClassVar[str] = "register_metrics"
    section: ClassVar[str] = "metrics"
    many: ClassVar[bool] = True
    required: ClassVar[bool] = False
    optional_injected: ClassVar[frozenset[str]] = frozenset({"num_classes"})


#: What the engine does when a callback raises: fail the run, or (loggers only) warn once and go on.
OnError = Literal["fail", "warn"]
ON_ERRORS: tuple[str, ...] = get_args(OnError)


@dataclass(frozen=True)
class Callback(Component):
    """A callback: an object whose events the engine calls during training (see :mod:`mlrun.callbacks`).

    Its factory takes only recipe parameters and returns an object implementing any of
    the events of :class:`mlrun.callbacks.CallbackProtocol`, and optionally
    ``state_dict()``/``load_state_dict()`` (saved in every checkpoint).

    ``logger`` marks a callback that only records (TensorBoard, MLflow): under DDP only
    rank 0 runs it, and it may say ``on_error="warn"``: an event that raises then warns
    once and training goes on (the warning is recorded in ``run.json``). Any other
    callback that raises fails the run. A callback that is not a logger runs on rank 0
    only, unless ``all_ranks`` is set (a callback that changes what every rank computes,
    like ``ema``, must run everywhere).
    """

    logger: bool = False
    on_error: OnError = "fail"
    all_ranks: bool = False

    kind: ClassVar[str] = "callback"
    hook: ClassVar[str] = "register_callbacks"
    section: ClassVar[str] = "callbacks"
    many: ClassVar[bool] = True
    required: ClassVar[bool] = False


#: The built-in kinds, in the order of the classic recipe. Plugins may declare more.
BUILTIN_KINDS: tuple[type[Component], ...] = (
    Dataset, Transform, Model, Criterion, Optimizer, Scheduler, Metric, Callback,
)  # fmt: skip
KINDS: dict[str, type[Component]] = {cls.kind: cls for cls in BUILTIN_KINDS}

#: Recipe sections that no kind may claim.
RESERVED_SECTIONS = frozenset({"train"})


def kind_problem(cls: Any, known: Mapping[str, type[Component]]) -> str | None:
    """What is wrong with a kind declaration (a descriptor class), or None when it is sound."""
    if not (isinstance(cls, type) and issubclass(cls, Component)) or cls is Component:
        return f"a kind must be a subclass of mlrun.Component, got {cls!r:.80}"
    label = f"kind {cls.__name__}"
    for attribute in ("kind", "hook", "section"):
        value = getattr(cls, attribute)
        if not isinstance(value, str) or not NAME_PATTERN.match(value):
            return f"{label}: {attribute} must be a lowercase name such as 'scheduler', got {value!r}"
    if cls.kind in known and known[cls.kind] is not cls:
        return f"{label}: kind '{cls.kind}' is already declared by {known[cls.kind].__qualname__}"
    sections = {other.section: other for other in known.values() if other is not cls}
    if cls.section in RESERVED_SECTIONS or cls.section in sections:
        return f"{label}: recipe section [{cls.section}] is already taken"
    if not isinstance(cls.injected, frozenset):
        return f"{label}: injected must be a frozenset of argument names"
    return None


def provides_validation(dataset: Component) -> bool:
    """Whether a dataset's factory gives its own validation split (it declares ``split``)."""
    import inspect

    try:
        return "split" in inspect.signature(dataset.factory).parameters
    except (TypeError, ValueError):
        return False
