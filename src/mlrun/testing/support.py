"""What the checks of :mod:`mlrun.testing` share: a plugin's components, parameters, sample images."""

from __future__ import annotations

import typing
import unittest
from collections.abc import Callable, Mapping
from typing import Any

import pluggy
import torch

from mlrun.components import BUILTIN_KINDS, Component
from mlrun.errors import did_you_mean
from mlrun.hookspecs import PROJECT_NAME
from mlrun.params import parameters, validate_params
from mlrun.plugins import create_manager

Problem = tuple[str, str]  # (check id, message)


def components_of(plugin: Any) -> tuple[list[Component], list[Problem]]:
    """The components a plugin's hooks return, and what is wrong with its hooks."""
    label = getattr(plugin, "__name__", repr(plugin))
    manager = create_manager()
    try:
        if _declares_hookspecs(plugin):
            manager.add_hookspecs(plugin)
        manager.register(plugin)
    except (pluggy.PluginValidationError, ValueError) as exc:
        return [], [("plugin:hooks", f"{label}: invalid hook implementation: {exc}")]
    problems = _unmarked_hooks(plugin, label)
    kinds = list(BUILTIN_KINDS) + _call(manager, "register_kinds", type, problems)
    components: list[Component] = []
    for kind in kinds:
        components += _call(manager, kind.hook, kind, problems)
    # A hook with no spec is misspelled, unless it is the hook of a kind the plugin declares.
    known = {kind.hook for kind in kinds}
    for caller in manager.get_hookcallers(plugin) or []:
        if not caller.has_spec() and caller.name not in known:
            hint = did_you_mean(caller.name, sorted(known | {"register_kinds"}))
            problems.append(("plugin:hooks", f"{label}: unknown hook {caller.name}(){hint}; mlrun never calls it"))
    return components, problems


def _declares_hookspecs(plugin: Any) -> bool:
    marker = f"{PROJECT_NAME}_spec"
    return any(getattr(getattr(plugin, n, None), marker, None) is not None for n in dir(plugin))


def _unmarked_hooks(plugin: Any, label: str) -> list[Problem]:
    """Functions named like a hook but not marked ``@hookimpl``: mlrun would never call them."""
    marker = f"{PROJECT_NAME}_impl"
    names = [kind.hook for kind in BUILTIN_KINDS] + ["register_kinds"]
    return [
        ("plugin:hooks", f"{label}.{name} is not marked @hookimpl, so mlrun never calls it; add `@hookimpl`")
        for name in names
        if callable(getattr(plugin, name, None)) and getattr(getattr(plugin, name), marker, None) is None
    ]


def _call(manager: pluggy.PluginManager, hook_name: str, expected: type, problems: list[Problem]) -> list[Any]:
    """What the plugin's implementations of one hook return; their mistakes go to ``problems``."""
    hook = getattr(manager.hook, hook_name, None)
    found: list[Any] = []
    for impl in hook.get_hookimpls() if hook is not None else []:
        where = f"plugin:{hook_name}"
        try:
            result = impl.function()
        except Exception as exc:  # noqa: BLE001 - reported as a failed check, with the plugin's words
            problems.append((where, f"{hook_name}() raised {type(exc).__name__}: {exc}"))
            continue
        if not isinstance(result, (list, tuple)):
            problems.append((where, f"{hook_name}() must return a list, got {type(result).__name__}"))
            continue
        for item in result:
            right = issubclass(item, Component) if expected is type and isinstance(item, type) else False
            if expected is type and not right:
                problems.append((where, f"{hook_name}() must return mlrun.Component subclasses, got {item!r:.80}"))
            elif expected is not type and not isinstance(item, expected):
                problems.append((where, f"{hook_name}() must return {expected.__name__} descriptors, got {item!r:.80}"))
            else:
                found.append(item)
    return found


def values_for(component: Component, given: Mapping[str, Any], *, required: bool = True) -> dict[str, Any]:
    """The validated parameters to build ``component`` with: its defaults and the ``given`` ones.

    Raises :class:`unittest.SkipTest` when a required parameter has no value (unless
    ``required`` is false), and :class:`AssertionError` when the values are refused.
    """
    where = f"{component.kind} '{component.name}'"
    missing = [p.name for p in parameters(component) if p.required and p.name not in given]
    if missing and required:
        example = ", ".join(f"'{name}': ..." for name in missing)
        raise unittest.SkipTest(
            f"{where}: required parameter(s) {', '.join(missing)} have no default; "
            f"pass params={{'{component.name}': {{{example}}}}} to check it"
        )
    values, problems = validate_params(component, given)
    problems = [(key, message) for key, message in problems if key not in missing or required]
    if problems:
        listing = "; ".join(f"{key}: {message}" for key, message in problems)
        raise AssertionError(f"{where}: the parameters to check it with are refused: {listing}")
    if values and component.validate is not None:
        try:
            component.validate(values)
        except ValueError as exc:
            raise AssertionError(f"{where}: its validate() refuses its own defaults: {exc}") from None
    return values


def failing(message: str) -> Callable[[], None]:
    """A check that fails with ``message`` (for a broken hook found while collecting)."""

    def run() -> None:
        raise AssertionError(message)

    return run


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def out_of_range(annotation: Any, valid: Any) -> list[tuple[str, Any]]:
    """``(bound, value)`` pairs: a value just outside each bound in ``annotation``.

    ``valid`` is a value that satisfies the annotation (a list's length is kept); numbers
    and list items are tried, and list lengths (``MinLen``/``MaxLen``) when ``valid`` is a list.
    """
    base, metadata = _split(annotation)
    found: list[tuple[str, Any]] = []
    for meta in _flatten(metadata):
        for attr, symbol in _BOUNDS:
            bound = getattr(meta, attr, None)
            value = _beyond(base, attr, bound)
            if value is not None:
                found.append((f"{symbol} {bound}", value))
        min_length = getattr(meta, "min_length", None)
        if isinstance(valid, list) and min_length and len(valid) >= min_length:
            found.append((f"at least {min_length} items", valid[: min_length - 1]))
        max_length = getattr(meta, "max_length", None)
        if isinstance(valid, list) and valid and max_length is not None and len(valid) <= max_length:
            found.append((f"at most {max_length} items", [valid[0]] * (max_length + 1)))
    args = typing.get_args(base)
    if typing.get_origin(base) is list and args:
        size = len(valid) if isinstance(valid, list) and valid else 1
        found += [(f"items {bound}", [value] * size) for bound, value in out_of_range(args[0], None)]
    return found


def _beyond(base: Any, attr: str, bound: Any) -> Any:
    if base not in (int, float) or not isinstance(bound, (int, float)) or isinstance(bound, bool):
        return None
    value = bound if attr in ("gt", "lt") else bound - 1 if attr == "ge" else bound + 1
    if base is int:
        return value if isinstance(value, int) else None
    return float(value)


def _split(annotation: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        return base, metadata
    return annotation, []


def _flatten(metadata: list[Any]) -> list[Any]:
    """Constraint objects, including those inside ``annotated_types.Interval`` and ``pydantic.Field``."""
    flat = []
    for meta in metadata:
        flat.append(meta)
        flat += _flatten(list(getattr(meta, "metadata", None) or []))
    return flat


class Context:
    """What the behaviour checks run on: sample images, shared by every component of a plugin."""

    def __init__(
        self, components: list[Component], given: Callable[[Component], dict[str, Any]], images: Any = None
    ) -> None:
        self.components = components
        self.given = given
        self._images = images

    @property
    def images(self) -> torch.Tensor:
        """Raw uint8 images, ``N x H x W`` (or ``N x H x W x C``): given, a dataset's, or random."""
        if self._images is None:
            self._images = self._dataset_images()
        if self._images is None:
            generator = torch.Generator().manual_seed(0)
            self._images = torch.randint(0, 256, (4, 28, 28), generator=generator, dtype=torch.uint8)
        return torch.as_tensor(self._images)

    def _dataset_images(self) -> torch.Tensor | None:
        for component in self.components:
            tensors = getattr(component, "tensors", None)
            if component.kind != "dataset" or tensors is None:
                continue
            try:
                with torch.random.fork_rng(devices=[]):
                    data = component.factory(train=True, transform=None, **values_for(component, self.given(component)))
                    samples = tensors(data)[0][:4]
            except Exception:  # noqa: BLE001 - the dataset's own check reports it; use other images
                continue
            if samples.dtype == torch.uint8 and samples.dim() in (3, 4) and len(samples):
                return samples
        return None

    def model_input(self) -> torch.Tensor:
        """The images as float ``N x C x H x W`` in [0, 1], as ``to_tensor`` makes them."""
        images = self.images
        floats = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
        return floats.to(torch.get_default_dtype()) / 255


def as_tensor(sample: Any) -> torch.Tensor:
    """A sample (tensor, PIL image, NumPy array, number) as a tensor, for comparisons."""
    if isinstance(sample, torch.Tensor):
        return sample
    import numpy

    return torch.as_tensor(numpy.array(sample))


def to_pil(image: torch.Tensor) -> Any:
    """An ``H x W`` or ``H x W x C`` uint8 image as the PIL image torchvision datasets give."""
    from PIL import Image

    return Image.fromarray(image.numpy())
