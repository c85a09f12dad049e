"""Fake installed distributions with mlrun entry points, for plugin-loading tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

GOOD_MODEL = """
from torch import nn
from mlrun import Model, hookimpl

def tiny(width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))

@hookimpl
def register_models():
    return [Model("{name}", tiny, "tiny test model")]
"""

BROKEN_IMPORT = """
import torchx_does_not_exist
"""

RAISING_HOOK = """
from mlrun import hookimpl

@hookimpl
def register_criteria():
    raise RuntimeError("focal needs a GPU")
"""

BAD_SIGNATURE = """
from mlrun import hookimpl

@hookimpl
def register_models(config):
    return []
"""

MISSPELLED_HOOK = """
from mlrun import hookimpl

@hookimpl
def register_model():
    return []
"""


def install_fake(
    site: Path, dist: str, source: str, *, entry: str | None = None, version: str = "1.0", target: str | None = None
) -> Path:
    """Write a module and a dist-info folder with an ``mlrun`` entry point into ``site``; returns the module file.

    ``target`` is the entry point's value (default: the module), e.g. ``module.gone`` for a stale one.
    """
    module = dist.replace("-", "_")
    path = site / f"{module}.py"
    path.write_text(textwrap.dedent(source))
    info = site / f"{module}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[mlrun]\n{entry or module} = {target or module}\n")
    return path
