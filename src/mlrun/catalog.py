"""What the registry offers, as plain data cached on disk: for shell completion, which must answer fast.

Building the registry imports every plugin, and with them torch: seconds. A completion
asks for the names only (kinds, components, parameters, the values a parameter can
take), so they are written once to a small JSON file in the user cache folder
(``$MLRUN_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlrun``, else ``~/.cache/mlrun``) and
read from there while nothing they depend on changes: the file's name holds a
fingerprint of mlrun's version and files, the installed plugins (entry points, their
versions and module files) and the plugin environment variables.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import typing
from collections.abc import Iterator
from importlib import metadata, util
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlrun.registry import Registry

CACHE_ENV = "MLRUN_CACHE_DIR"
#: Environment variables that change which plugins load (see mlrun.plugins).
PLUGIN_ENV = ("MLRUN_PLUGINS", "MLRUN_DISABLE_PLUGIN_AUTOLOAD")
PREFIX = "completion-"
#: Files looked at per plugin package for its fingerprint; a plugin is a few modules.
MAX_FILES = 200
#: mlrun's own files the catalog's content comes from (with the built-in plugins' folder).
OWN_FILES = ("components.py", "params.py", "settings.py", "registry.py", "plugins.py")
#: Catalogs kept in the cache folder (one per environment and version of the plugins).
KEEP = 8

#: ``{"kinds": {kind: {"section", "many"}}, "components": {kind: {name: {param: choices}}}, "train": {key: choices}}``;
#: choices is a list of values as TOML text (``"relu"``, ``true``), empty when they are not a few words.
Catalog = dict[str, Any]


def cache_dir() -> Path:
    """The folder of mlrun's cached files."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlrun"


def load_catalog() -> Catalog:
    """The catalog of the installed plugins: from the cache when it is current, else built (and cached)."""
    path = cache_dir() / f"{PREFIX}{fingerprint()}.json"
    with contextlib.suppress(OSError, ValueError):
        found = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(found, dict) and {"kinds", "components", "train"} <= set(found):
            return found
    with _silenced():  # plugin code may print; a completion's output is read by the shell
        from mlrun.api import default_registry

        catalog = build_catalog(default_registry())
    _store(path, catalog)
    return catalog


def remember(registry: Registry) -> None:
    """Cache the catalog of a registry a command built anyway, so the next completion needs no plugin loading.

    Without it, the first TAB after an install, an upgrade or a plugin change loads every
    plugin (and torch) itself: seconds. Costs a fingerprint (~10 ms) when the cache is current.
    """
    path = cache_dir() / f"{PREFIX}{fingerprint()}.json"
    if not path.is_file():
        _store(path, build_catalog(registry))


def build_catalog(registry: Registry) -> Catalog:
    """The names a completion offers, from a registry."""
    from mlrun.params import parameters

    components: dict[str, dict[str, dict[str, list[str]]]] = {kind: {} for kind in registry.kinds}
    for entry in registry.everything():
        params = {p.name: choices(p.annotation) for p in parameters(entry.component)}
        kind, plain = entry.component.kind, entry.component.name
        if registry.entries.get(kind, {}).get(plain) is entry:
            components[kind][plain] = params
        components[kind][entry.qualified_name] = params
    return {
        "kinds": {kind: {"section": cls.section, "many": cls.many} for kind, cls in registry.kinds.items()},
        "components": components,
        "train": train_choices(),
    }


def train_choices() -> dict[str, list[str]]:
    """Every ``[train]`` setting and the values it can take (when they are a few words)."""
    from mlrun.settings import TrainSettings

    return {name: choices(info.annotation) for name, info in TrainSettings.model_fields.items()}


def choices(annotation: Any) -> list[str]:
    """The values an annotation allows as TOML text, when they are a few words: literals and booleans."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation is bool:
        return ["true", "false"]
    found: list[str] = []
    if typing.get_origin(annotation) is typing.Literal:
        return [_toml(value) for value in typing.get_args(annotation)]
    for member in typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, _union()) else ():
        found += choices(member)
    return found


def _union() -> Any:
    import types

    return getattr(types, "UnionType", typing.Union)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) and value.isidentifier() else json.dumps(value)


def fingerprint() -> str:
    """A short hash of everything the catalog depends on; cheap (no plugin is imported)."""
    import mlrun

    parts: list[Any] = [
        getattr(mlrun, "__version__", ""),
        sys.version_info[:2],
        [os.environ.get(v) for v in PLUGIN_ENV],
    ]
    package = Path(mlrun.__file__).parent
    parts.append([str(package), _stamps(package / "builtins"), *(_stamps(package / n, single=True) for n in OWN_FILES)])
    for point in sorted(metadata.entry_points(group="mlrun"), key=lambda p: (p.name, p.value)):
        dist = getattr(point, "dist", None)
        top = point.value.split(":")[0].split(".")[0]
        parts.append([point.name, point.value, getattr(dist, "name", ""), getattr(dist, "version", ""), _module(top)])
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]


def _module(name: str) -> Any:
    """The modification stamps of a top-level module's files, found without importing it."""
    try:
        spec = util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    origin = Path(spec.origin)
    return _stamps(origin.parent) if spec.submodule_search_locations else _stamps(origin, single=True)


def _stamps(path: Path, *, single: bool = False) -> list[Any]:
    files = [path] if single else sorted(path.rglob("*.py"))[:MAX_FILES]
    found = []
    for file in files:
        with contextlib.suppress(OSError):
            info = file.stat()
            found.append([file.name, info.st_mtime_ns, info.st_size])
    return found


def _store(path: Path, catalog: Catalog) -> None:
    """Write the catalog (temp file, then rename) and drop all but the newest few; an unwritable cache is skipped."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Several environments may share the folder: keep a few catalogs, not only this one.
        older = sorted(path.parent.glob(f"{PREFIX}*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in older[KEEP - 1 :]:
            with contextlib.suppress(OSError):
                old.unlink()
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(catalog), encoding="utf-8")
        os.replace(temp, path)


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
