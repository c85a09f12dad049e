"""``mlrun new plugin NAME``: a ready-to-install plugin package with one example model."""

from __future__ import annotations

import keyword
import re
import sys
from importlib import metadata
from pathlib import Path

from mlrun import DISTRIBUTION as FRAMEWORK_DISTRIBUTION  # mlrun's own name on the package index
from mlrun.errors import UsageError
from mlrun.files import staged_folder

DISTRIBUTION_NAME = re.compile(r"^[a-z][a-z0-9]*([-_][a-z0-9]+)*$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "mlrun plugin: {dist}"
requires-python = ">=3.10"
# torch-mlrun is this framework; "mlrun" on the package index is an unrelated project.
dependencies = ["torch-mlrun", "torch>=2.4", "annotated-types>=0.6"]

[project.optional-dependencies]
test = ["pytest>=8"]

# The one line that makes this package an mlrun plugin.
[project.entry-points.mlrun]
{module} = "{module}.plugin"

[tool.setuptools.packages.find]
where = ["src"]
"""

PLUGIN = '''\
"""mlrun plugin {dist}: components registered through mlrun's hooks."""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Ge, Gt, Lt
from torch import nn

from mlrun import Model, hookimpl


def {model}(
    hidden_size: Annotated[int, Gt(0)] = 256,
    dropout: Annotated[float, Ge(0), Lt(1)] = 0.1,
    output: Literal["logits", "log_probs"] = "logits",
) -> nn.Module:
    """A one-hidden-layer network for 28x28 images."""
    layers: list[nn.Module] = [
        nn.Flatten(), nn.Linear(28 * 28, hidden_size), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden_size, 10),
    ]
    if output == "log_probs":
        layers.append(nn.LogSoftmax(dim=1))
    return nn.Sequential(*layers)


@hookimpl
def register_models() -> list[Model]:
    """The models this plugin provides."""
    return [
        Model("{model}", {model}, "example model from {dist}: 784-hidden-10", output="output"),
    ]
'''

INIT = '''\
"""{dist}: an mlrun plugin."""
'''

TEST = '''\
"""Tests for {dist}: mlrun's conformance checks pass, and mlrun finds the plugin through its entry point."""

import pytest
import torch

from mlrun.plugins import PluginSettings, load_plugins
from mlrun.registry import build_registry
from mlrun.testing import plugin_checks
from {module}.plugin import {model}

#: mlrun's checks of every component this plugin registers: output kind, parameters, batch transforms...
CHECKS = plugin_checks("{module}")


@pytest.mark.parametrize("check", CHECKS, ids=[check.id for check in CHECKS])
def test_conformance(check) -> None:
    check.run()


def test_model_outputs_one_score_per_class() -> None:
    assert {model}()(torch.zeros(4, 1, 28, 28)).shape == (4, 10)


def test_mlrun_finds_the_model_through_the_entry_point() -> None:
    registry = build_registry(load_plugins(PluginSettings(allow=frozenset({{"{module}"}}))))
    entry = registry.get("model", "{model}")
    assert entry.plugin.label == "{dist}==0.1.0"
'''

RECIPE = """\
# Run: mlrun recipes/example.toml
#
# Trains {model} from {dist} on Fashion-MNIST.

[dataset]
name = "fashion_mnist"

[[transforms]]
name = "to_tensor"

[[transforms]]
name = "normalize"
mean = [0.5]
std = [0.5]

[model]
name = "{model}"

[criterion]
name = "cross_entropy"

[optimizer]
name = "adam"
lr = 0.001

[train]
epochs = 1
"""

README = """\
# {dist}

A plugin for mlrun, the plugin-based PyTorch training framework, providing the model
`{model}`. It depends on mlrun's distribution, `torch-mlrun` (the `mlrun` on PyPI is an
unrelated project).

```sh
pip install -e .
mlrun list model            # shows {model}, from {dist}==0.1.0
mlrun recipes/example.toml  # trains it on Fashion-MNIST
pytest                      # the plugin's tests, mlrun's conformance checks among them
```
"""


def names_for(name: str) -> tuple[str, str, str]:
    """Distribution, module and model names for a plugin called ``name``."""
    if not DISTRIBUTION_NAME.match(name):
        raise UsageError(
            f"'{name}' is not a valid package name: use lowercase letters, digits and single "
            "hyphens or underscores, starting with a letter (e.g. mlrun-acme)"
        )
    if _normalized(name) == FRAMEWORK_DISTRIBUTION:
        raise UsageError(
            f"'{name}' is the name of mlrun's own distribution: installing the plugin would replace "
            f"mlrun; choose another name, e.g. {_suggest(name)}"
        )
    module = name.replace("-", "_")
    if keyword.iskeyword(module):
        raise UsageError(
            f"'{name}' cannot be a package name: '{module}' is a Python keyword; "
            f"choose another name, e.g. {_suggest(name)}"
        )
    shadowed = _shadowed(name, module)
    if shadowed:
        raise UsageError(
            f"'{name}' would shadow {shadowed}: `import {module}` could no longer find one of "
            f"the two; choose another name, e.g. {_suggest(name)}"
        )
    short = module.removeprefix("mlrun_") or module
    return name, module, f"{short}_mlp"


#: Modules a plugin must never shadow, installed or not: mlrun, what it runs on, and test folders.
RESERVED_MODULES = frozenset({
    "mlrun", "torch", "torchvision", "numpy", "pluggy", "pydantic", "annotated_types", "tomli_w",
    "setuptools", "pip", "pytest", "test", "tests",
})  # fmt: skip


def _shadowed(name: str, module: str) -> str | None:
    """What the plugin's module would shadow: a standard-library or important/installed module."""
    if module in sys.stdlib_module_names:
        return f"the standard-library module '{module}'"
    if module in RESERVED_MODULES:
        return f"the module '{module}'"
    # An installed distribution providing the same top-level module; only this very plugin,
    # installed from an earlier scaffold, is not a clash.
    owners = metadata.packages_distributions().get(module, [])
    others = sorted({d for d in owners if not (_normalized(d) == _normalized(name) and _is_plugin(d))})
    if others:
        return f"the module '{module}' of the installed package {', '.join(others)}"
    return None


def _is_plugin(dist: str) -> bool:
    try:
        return any(ep.group == "mlrun" for ep in metadata.distribution(dist).entry_points)
    except metadata.PackageNotFoundError:
        return False


def _normalized(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _suggest(name: str) -> str:
    """A distinctive name in the usual style; mlrun-NAME is almost never taken."""
    return "mlrun-acme" if _normalized(name) in ("mlrun", FRAMEWORK_DISTRIBUTION) else f"mlrun-{name}"


def create_plugin(name: str, parent: Path) -> Path:
    """Write the package into ``parent/name``; refuses to touch an existing path."""
    dist, module, model = names_for(name)
    target = parent / name
    if target.exists():
        raise UsageError(f"{target} already exists; choose another name or remove it first")
    values = {"dist": dist, "module": module, "model": model}
    files = {
        "pyproject.toml": PYPROJECT,
        f"src/{module}/__init__.py": INIT,
        f"src/{module}/plugin.py": PLUGIN,
        "tests/test_plugin.py": TEST,
        "recipes/example.toml": RECIPE,
        "README.md": README,
    }
    try:
        with staged_folder(target, replace=False) as staging:  # all or nothing
            for relative, template in files.items():
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(template.format(**values), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot create {target}: {exc.strerror or exc}") from exc
    return target
