"""mlrun-mlflow: an mlrun plugin with an ``mlflow`` logger callback.

The callback is registered through the ``mlrun`` entry-point group by
:mod:`mlrun_mlflow.plugin`; a recipe turns it on with ``[[callbacks]] name = "mlflow"``.
MLflow itself is imported only when a run uses the callback.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("mlrun-mlflow")
except _metadata.PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
