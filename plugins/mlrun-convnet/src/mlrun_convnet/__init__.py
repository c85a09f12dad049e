"""mlrun-convnet: an mlrun plugin with a small CNN (``small_cnn``) and a focal loss (``focal``).

The components are registered through the ``mlrun`` entry-point group by
:mod:`mlrun_convnet.plugin`; installing this distribution is all it takes for
recipes to name them.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("mlrun-convnet")
except _metadata.PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
