"""mlrun: a plugin-based training framework for PyTorch.

The public plugin API is what this module exports: ``hookimpl`` and the component
descriptors. A plugin is a module with ``@hookimpl`` functions named after the
hook specs in :mod:`mlrun.hookspecs`, each returning a list of descriptors.
"""

from importlib import metadata as _metadata

from mlrun.components import Criterion, Dataset, Model, Optimizer, OutputKind, Transform
from mlrun.hookspecs import hookimpl

try:
    __version__ = _metadata.version("mlrun")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "Criterion",
    "Dataset",
    "Model",
    "Optimizer",
    "OutputKind",
    "Transform",
    "__version__",
    "hookimpl",
]
