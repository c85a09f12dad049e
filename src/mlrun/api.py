"""The Python API: train, check and resume recipes from a notebook or a script.

Each function does what the matching command does (``mlrun RECIPE``, ``mlrun check``,
``mlrun resume``) and returns the result instead of printing it. Errors are raised,
not printed: :class:`mlrun.errors.UsageError` for bad input (nothing was written),
:class:`mlrun.errors.MlrunError` for a failure during training. See docs/api.md.

This module imports nothing heavy at import time, so that ``import mlrun`` stays light;
torch is imported on the first call that needs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrun.errors import UsageError

if TYPE_CHECKING:
    from mlrun.engine import RunResult
    from mlrun.recipe import Recipe
    from mlrun.registry import Registry

__all__ = ["check", "default_registry", "resume", "train"]


def default_registry(*, autoload: bool | None = None, strict: bool = False) -> Registry:
    """The built-in components plus the installed plugins' ones, as the ``mlrun`` command sees them.

    The MLRUN_* plugin environment variables are honoured (MLRUN_PLUGINS,
    MLRUN_DISABLE_PLUGIN_AUTOLOAD, MLRUN_STRICT_PLUGINS, MLRUN_PLUGIN_IMPORT_TIMEOUT).
    ``autoload`` overrides MLRUN_DISABLE_PLUGIN_AUTOLOAD: False gives the built-ins only.
    ``strict`` (or MLRUN_STRICT_PLUGINS=1) makes a plugin that fails to load an error.
    """
    from mlrun.plugins import PluginSettings, load_plugins
    from mlrun.registry import build_registry

    settings = PluginSettings.from_env(strict=strict)
    if autoload is not None:
        settings = dataclasses.replace(settings, autoload=autoload)
    return build_registry(load_plugins(settings))


def check(
    recipe: str | Path,
    overrides: Sequence[str] = (),
    *,
    registry: Registry | None = None,
    data: str | Path | None = None,
) -> Recipe:
    """Validate a recipe with its overrides, as ``mlrun check`` does; returns it fully resolved.

    Nothing is trained or written. Every problem is reported at once in one
    :class:`UsageError` (``exc.problems`` lists them).
    """
    from mlrun.runs import RunFolder

    loaded = _load(recipe, overrides, registry, data)
    RunFolder.check_writable(loaded.train.output_dir)
    return loaded


def train(
    recipe: str | Path,
    overrides: Sequence[str] = (),
    *,
    registry: Registry | None = None,
    echo: Callable[[str], None] = print,
    progress: bool | None = None,
    data: str | Path | None = None,
) -> RunResult:
    """Train a recipe, as ``mlrun RECIPE`` does; returns the run folder and the metrics per epoch.

    ``echo`` receives each line the command would print (``lambda line: None`` for
    silence); ``progress`` shows the progress bar (default: when stderr is a terminal);
    ``data`` is the dataset folder, like ``--data``.
    """
    from mlrun import engine

    return engine.run(_load(recipe, overrides, registry, data), echo=echo, progress=progress)


def resume(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    *,
    force: bool = False,
    registry: Registry | None = None,
    echo: Callable[[str], None] = print,
    progress: bool | None = None,
    data: str | Path | None = None,
) -> RunResult:
    """Continue a run folder from its checkpoint, as ``mlrun resume RUN_DIR`` does.

    The folder's own ``recipe.toml`` is used, plus ``overrides``; a change the
    checkpoint cannot honour is refused, and one it can needs ``force=True``.
    Exported as ``mlrun.resume_run``: ``mlrun.resume`` is the resume-policy module.
    """
    from mlrun import engine
    from mlrun.runs import RECIPE_FILE, RunFolder

    folder = RunFolder(Path(run_dir))
    saved = folder.path / RECIPE_FILE
    if not saved.is_file():
        raise UsageError(f"{folder.path} is not a run folder: {saved} is missing")
    loaded = _load(saved, overrides, registry, data)
    return engine.run(loaded, echo=echo, progress=progress, resume=folder, force=force)


def _load(recipe: str | Path, overrides: Sequence[str], registry: Registry | None, data: str | Path | None) -> Recipe:
    from mlrun.recipe import load_recipe

    if isinstance(overrides, (str, bytes)):
        # A bare string would be taken apart letter by letter into nonsense overrides.
        raise UsageError(
            f"overrides must be a list of 'key.path=value' strings, not the string {overrides!r}",
            problems=[f"write overrides=[{overrides!r}]"],
        )
    # Absolute, like --data: the run folder's recipe.toml must find the data from anywhere.
    extra: dict[str, Any] | None = {"dataset": {"root": str(Path(data).expanduser().resolve())}} if data else None
    return load_recipe(recipe, registry or default_registry(), list(overrides), extra_data=extra)
