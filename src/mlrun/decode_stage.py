"""The decode stage: the leading deterministic transforms a caching dataset applies once.

Decoding PNG/JPEG files every epoch is what makes image training slow on CPUs. A
dataset whose factory declares ``decode`` (such as the built-in ``image_folder``)
decodes each image once, applies the recipe's *decode stage* to it and caches the
result as uint8 pixels; its ``tensors()`` then hands the fast path those cached
pixels. The decode stage is the leading run of the recipe's transforms that are
marked ``decode`` (resize, center crop, grayscale) and not ``random``: it holds no
augmentation, so training and evaluation share it, and its cached result does not
depend on the split. The transforms after it reach the factory as ``transform``
and, on the memory path, run per batch as usual. Datasets that do not declare
``decode`` get the whole pipeline as ``transform``, exactly as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mlrun.components import Component
from mlrun.params import to_jsonable
from mlrun.recipe import ComponentSpec, Recipe, transforms_for

#: The optional injected argument of a dataset factory that asks for the decode stage.
ARGUMENT = "decode"

Compose = Callable[..., Callable[[Any], Any] | None]


@dataclass(frozen=True, eq=False)
class DecodeStage:
    """What a caching dataset applies once to each decoded image, before caching.

    Call it on a decoded image (a PIL image) to get the image as every later transform
    expects it. ``key`` names the transforms and their parameters (JSON-able): part of
    a cache's key, so a changed ``resize`` rebuilds the cache.
    """

    transform: Callable[[Any], Any] | None = None
    key: tuple[dict[str, Any], ...] = ()

    def __call__(self, image: Any) -> Any:
        """The image after the decode stage (the image itself when the stage is empty)."""
        return image if self.transform is None else self.transform(image)

    @property
    def names(self) -> tuple[str, ...]:
        """The transforms of the stage, in order."""
        return tuple(str(step["name"]) for step in self.key)


def takes_decode(dataset: Component) -> bool:
    """Whether a dataset's factory declares ``decode`` (it caches the decode stage's output)."""
    try:
        return ARGUMENT in inspect.signature(dataset.factory).parameters
    except (TypeError, ValueError):
        return False


def split_decode(dataset: Component, specs: Sequence[ComponentSpec]) -> tuple[list[ComponentSpec], list[ComponentSpec]]:
    """``(decode stage, the rest)``: the stage is empty unless the dataset declares ``decode``."""
    if not takes_decode(dataset):
        return [], list(specs)
    count = 0
    for spec in specs:
        component = spec.component
        if not getattr(component, "decode", False) or getattr(component, "random", False):
            break
        count += 1
    return list(specs[:count]), list(specs[count:])


def memory_transforms(dataset: Component, specs: Sequence[ComponentSpec]) -> list[ComponentSpec]:
    """The transforms the memory path applies per batch: all but the dataset's cached decode stage."""
    return split_decode(dataset, specs)[1]


def dataset_inputs(recipe: Recipe, compose: Compose, *, train: bool) -> dict[str, Any]:
    """The transform arguments of the dataset factory for one split: ``transform``, and ``decode`` if declared.

    ``compose(specs, train=...)`` builds a per-sample pipeline (:func:`mlrun.build.compose`).
    """
    dataset = recipe.dataset.component
    if not takes_decode(dataset):
        return {"transform": compose(recipe.transforms, train=train)}
    stage, rest = split_decode(dataset, recipe.transforms)
    key = tuple({"name": spec.component.name, "params": to_jsonable(spec.params)} for spec in stage)
    return {
        "transform": compose(transforms_for(rest, train=train), train=train),
        ARGUMENT: DecodeStage(compose(stage, train=False), key),
    }
