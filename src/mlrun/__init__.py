"""mlrun: a plugin-based training framework for PyTorch.

The public plugin API is what this module exports: ``hookimpl`` and the component
descriptors. A plugin is a module with ``@hookimpl`` functions named after the
hook specs in :mod:`mlrun.hookspecs`, each returning a list of descriptors.

The Python API (:mod:`mlrun.api`, docs/api.md) is here too: ``mlrun.train``,
``mlrun.check``, ``mlrun.resume_run`` and ``mlrun.default_registry``.
"""

from importlib import metadata as _metadata
from typing import Any as _Any

from mlrun.components import Component, Criterion, Dataset, Model, Optimizer, OutputKind, Scheduler, Transform
from mlrun.hookspecs import hookimpl, hookspec

try:
    __version__ = _metadata.version("mlrun")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

# The Python API, imported on first use: ``import mlrun`` (which every plugin does)
# must not import torch. ``resume`` is exported as ``resume_run`` because the
# submodule mlrun.resume (the resume policy) takes the name ``mlrun.resume``.
_API = {"train": "train", "check": "check", "resume_run": "resume", "default_registry": "default_registry"}


def __getattr__(name: str) -> _Any:
    """``mlrun.train`` and the rest of the Python API, loaded lazily from :mod:`mlrun.api`."""
    if name in _API:
        from mlrun import api

        return getattr(api, _API[name])
    raise AttributeError(f"module 'mlrun' has no attribute {name!r}")


__all__ = [
    "Component",
    "Criterion",
    "Dataset",
    "Model",
    "Optimizer",
    "OutputKind",
    "Scheduler",
    "Transform",
    "__version__",
    "check",
    "default_registry",
    "hookimpl",
    "hookspec",
    "resume_run",
    "train",
]
