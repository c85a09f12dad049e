"""Shared fixtures: every test runs offline, in its own folder, with only the plugins it asks for."""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import mlrun

sys.path.insert(0, str(Path(__file__).parent))
from idx import write_dataset  # noqa: E402

if TYPE_CHECKING:
    from mlrun.registry import Registry

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"

#: Keyword arguments for engine.run / mlrun.train that keep a run silent: no log lines, no bar.
QUIET: dict[str, Any] = {"echo": lambda line: None, "progress": False}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test``), slow tests first: the long ones then run side by side
    on the workers instead of one of them ending the run alone while the others wait."""
    if getattr(config.option, "numprocesses", None):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mlrun's cache folder (the completion catalog) for the tests: never the developer's, and outside
    each test's folder, which the "nothing written" checks look at."""
    return tmp_path_factory.mktemp("user-cache")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_cache: Path) -> Path:
    """Run in a temp folder, never download, never load the developer's installed plugins."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLRUN_DATA_DIR", str(tmp_path / "user-data"))
    monkeypatch.setenv("MLRUN_CACHE_DIR", str(user_cache))
    monkeypatch.setenv("MLRUN_OFFLINE", "1")
    monkeypatch.setenv("MLRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("MLRUN_PLUGINS", raising=False)
    monkeypatch.delenv("MLRUN_STRICT_PLUGINS", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The built-in components only (never the developer's installed plugins), built once."""
    return mlrun.default_registry(autoload=False)


REAL_DATA_MISSING = (
    "the real Fashion-MNIST is not installed: run `make test` (it installs Debian's "
    "dataset-fashion-mnist), or `apt-get install dataset-fashion-mnist`"
)


def in_ci() -> bool:
    """True under CI (which sets CI=true and installs the real data)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_real_fashion_mnist() -> Path:
    """The installed Fashion-MNIST; when it is absent, skip the test (here) or fail it (in CI)."""
    from mlrun import data
    from mlrun.builtins.datasets import FASHION_MNIST

    system = data.find_system_copy(FASHION_MNIST)
    if system is not None:
        return system
    if in_ci():  # CI installs the data: a missing copy there is a broken set-up, not a skip
        pytest.fail(f"{REAL_DATA_MISSING} (CI=true: real-data tests must run in CI)", pytrace=False)
    pytest.skip(REAL_DATA_MISSING)


@pytest.fixture
def real_fashion_mnist() -> Path:
    """The folder of the installed real Fashion-MNIST (see require_real_fashion_mnist)."""
    return require_real_fashion_mnist()


@pytest.fixture(autouse=True)
def _real_data_available(request: pytest.FixtureRequest) -> None:
    """Every test marked ``real_data`` needs the installed Fashion-MNIST: the check lives here, once."""
    if request.node.get_closest_marker("real_data") is not None:
        request.getfixturevalue("real_fashion_mnist")


@pytest.fixture(scope="session")
def idx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding small generated Fashion-MNIST and MNIST IDX files."""
    root = tmp_path_factory.mktemp("idx")
    write_dataset(root, "FashionMNIST")
    write_dataset(root, "MNIST", seed=10)
    return root


def write_recipe(path: Path, text: str) -> Path:
    """Write a recipe file and return its path."""
    path.write_text(text, encoding="utf-8")
    return path


SMALL_RECIPE = """\
[dataset]
name = "fashion_mnist"
root = "{root}"

[[transforms]]
name = "to_tensor"

[[transforms]]
name = "normalize"
mean = [0.5]
std = [0.5]

[model]
name = "classifier"

[criterion]
name = "nll"

[optimizer]
name = "adam"
lr = 0.01

[train]
epochs = 2
batch_size = 32
"""


@pytest.fixture
def small_recipe(tmp_path: Path, idx_root: Path) -> Path:
    """The Summary recipe pointed at the small generated data, 2 epochs."""
    return write_recipe(tmp_path / "small.toml", SMALL_RECIPE.format(root=idx_root))


@contextlib.contextmanager
def interrupted_at(owner: Any, name: str, call: int, *, counts: Callable[[], bool] = lambda: True) -> Iterator[None]:
    """Raise KeyboardInterrupt (an abrupt Ctrl-C) at the ``call``-th call of ``owner.name``.

    Only calls for which ``counts()`` holds are counted (e.g. ``torch.is_grad_enabled`` for
    training losses, not evaluation ones). The original is back when the block ends.
    """
    real, seen = getattr(owner, name), {"calls": 0}

    def counting(*args: Any, **kwargs: Any) -> Any:
        if counts():
            seen["calls"] += 1
            if seen["calls"] == call:
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    setattr(owner, name, counting)
    try:
        yield
    finally:
        setattr(owner, name, real)


def wait_for_checkpoint(process: subprocess.Popen[str]) -> Path:
    """The run folder under ./runs once its first checkpoint exists (the process must still run)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list(Path("runs").glob("*/checkpoint.pt"))
        if found:
            return found[0].parent
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared")


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``mlrun`` command the way a user does; returns the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "mlrun", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=600,
    )  # fmt: skip


@pytest.fixture
def plugin_venv(tmp_path: Path) -> Path:
    """A throw-away virtual environment that sees this environment's packages (mlrun, torch).

    Plugin packages are pip-installed into it, so installing them never changes the
    environment the rest of the suite runs in.
    """
    import sysconfig
    import venv

    root = tmp_path / "plugin-venv"
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # addsitedir (unlike a plain path line) also processes this environment's .pth files,
    # which is how the editable installs of mlrun and its plugins are found.
    here = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "parent_env.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    return python


def pip_install_editable(python: Path, package: Path) -> None:
    """`pip install -e PACKAGE` into the given environment (no downloads: deps are already there)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", "--no-deps", "--no-build-isolation", "-e", str(package)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path (and PYTHONPATH, for subprocesses) holding fake distributions."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    # Prepended, so a PYTHONPATH that points at the source tree under test still holds.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("MLRUN_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("MLRUN_PLUGINS", "")  # each test allows exactly the plugins it wants
    yield folder
    for name in [m for m in sys.modules if m.startswith("mlrun_fake")]:
        del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture
def checkout_venv(tmp_path: Path) -> Path:
    """A fresh virtual environment (its own pip, nothing of this one) holding only this checkout.

    The checkout is installed editable without its dependencies, so pip sees ``torch-mlrun``
    installed from here; anything else a command asks for comes from the configured index.
    """
    import venv

    root = tmp_path / "checkout-venv"
    venv.EnvBuilder(with_pip=True).create(root)
    python = root / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "-e", str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return python
