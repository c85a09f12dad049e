"""mlrun: a plugin-based training framework for PyTorch.

The public plugin API is what this module exports: ``hookimpl`` and the component
descriptors. A plugin is a module with ``@hookimpl`` functions named after the
hook specs in :mod:`mlrun.hookspecs`, each returning a list of descriptors.

The Python API (:mod:`mlrun.api`, docs/api.md) is here too: ``mlrun.train``,
``mlrun.check``, ``mlrun.resume_run`` and ``mlrun.default_registry``; ``mlrun.validate_params``
checks a component's parameters as a recipe would (:mod:`mlrun.params`). Plugin authors also
have :mod:`mlrun.datasets` (the built-in datasets to build on) and :mod:`mlrun.testing` (the
conformance kit).

The distribution is called ``torch-mlrun``: ``mlrun`` on the package index is an unrelated
project, which also installs a Python package and a command called ``mlrun``.
"""

from importlib import metadata as _metadata
from typing import Any as _Any

from mlrun.components import (
    Callback,
    Component,
    Criterion,
    Dataset,
    Metric,
    Model,
    Optimizer,
    OutputKind,
    Scheduler,
    Transform,
)
from mlrun.hookspecs import hookimpl, hookspec

#: This framework's distribution name on the package index (the import name stays ``mlrun``).
DISTRIBUTION = "torch-mlrun"

try:
    __version__ = _metadata.version(DISTRIBUTION)
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"


def _other_mlrun() -> str | None:
    """What to tell the user when the unrelated ``mlrun`` distribution is installed here too.

    Both install the package ``mlrun`` and the command ``mlrun``, so whichever was installed
    last has replaced files of the other: errors would look random. Costs one metadata
    lookup (well under a millisecond), so it runs once per import.
    """
    try:
        other = _metadata.distribution("mlrun")
    except _metadata.PackageNotFoundError:
        return None
    scripts = [ep.value for ep in other.entry_points if ep.group == "console_scripts" and ep.name == "mlrun"]
    if scripts == ["mlrun.cli:main"]:  # this framework's own metadata, from before it was renamed
        return None
    return (
        f"the package 'mlrun' {other.version} is installed in this environment: it is an unrelated "
        f"project, not this framework ('{DISTRIBUTION}' {__version__}). Both provide the Python "
        "package `mlrun` and the `mlrun` command, so one has overwritten the other.\n"
        f"  To fix: `pip uninstall mlrun`, then reinstall this framework: `{_reinstall_command()}`; "
        "or keep the two projects in separate virtual environments.\n"
        f"  A plugin must depend on '{DISTRIBUTION}', never on 'mlrun'."
    )


def _reinstall_command() -> str:
    from pathlib import Path

    checkout = Path(__file__).resolve().parents[2]  # src/mlrun/__init__.py in a source checkout
    if (checkout / "pyproject.toml").is_file():
        return f"pip install --force-reinstall --no-deps -e {checkout}"
    return f"pip install --force-reinstall --no-deps {DISTRIBUTION}"


#: Set when the unrelated ``mlrun`` distribution is installed too: the CLI and the Python API
#: refuse to start with this message (importing mlrun itself still works, for plugins).
CONFLICT: str | None = _other_mlrun()

# The Python API, imported on first use: ``import mlrun`` (which every plugin does)
# must not import torch. ``resume`` is exported as ``resume_run`` because the
# submodule mlrun.resume (the resume policy) takes the name ``mlrun.resume``.
_API = {"train": "train", "check": "check", "resume_run": "resume", "default_registry": "default_registry"}


def __getattr__(name: str) -> _Any:
    """``mlrun.train`` and the rest of the Python API, loaded lazily from :mod:`mlrun.api`."""
    if name in _API:
        if CONFLICT:
            raise ImportError(CONFLICT)
        from mlrun import api

        return getattr(api, _API[name])
    if name == "validate_params":  # pydantic is imported on first use, not by every plugin
        from mlrun.params import validate_params

        return validate_params
    raise AttributeError(f"module 'mlrun' has no attribute {name!r}")


__all__ = [
    "Callback",
    "Component",
    "Criterion",
    "Dataset",
    "Metric",
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
