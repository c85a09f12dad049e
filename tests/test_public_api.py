"""What a plugin author may import: mlrun.datasets, mlrun.validate_params, and the distribution's own name."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import pytest
import torch
from annotated_types import Gt

import mlrun
from mlrun import Dataset, hookimpl
from mlrun.datasets import FASHION_MNIST_CLASSES, IdxDataset, fashion_mnist, raw_tensors, resolve_root, subset
from mlrun.errors import UsageError
from mlrun.testing import check_plugin

from conftest import run_cli

# ------------------------------------------------------------------ building on a built-in dataset


def fashion_subset(
    *, train: bool, transform: Any, size: Annotated[int, Gt(0)] = 50, root: str | None = None
) -> torch.utils.data.Dataset:
    """The first ``size`` Fashion-MNIST images of a split: what a plugin author writes."""
    return subset(fashion_mnist(train=train, transform=transform, root=root), range(size))


@hookimpl
def register_datasets() -> list[Dataset]:
    return [
        Dataset("fashion_subset", fashion_subset, "the first images of Fashion-MNIST",
                classes=FASHION_MNIST_CLASSES, channels=1, tensors=raw_tensors),
    ]  # fmt: skip


SUBSET_PLUGIN = types.SimpleNamespace(__name__="mlrun_fashion_subset", register_datasets=register_datasets)


def test_the_public_factories_are_the_builtins(registry) -> None:
    import mlrun.datasets

    assert registry.get("dataset", "fashion_mnist").component.factory is mlrun.datasets.fashion_mnist
    assert registry.get("dataset", "mnist").component.factory is mlrun.datasets.mnist


def test_a_subset_plugin_built_on_fashion_mnist_passes_the_kit(idx_root: Path) -> None:
    report = check_plugin(SUBSET_PLUGIN, params={"fashion_subset": {"root": str(idx_root)}})
    assert report.passed == (
        "dataset:fashion_subset:parameters", "dataset:fashion_subset:out-of-range", "dataset:fashion_subset:samples",
    )  # fmt: skip


def test_subset_and_raw_tensors_give_the_chosen_samples(idx_root: Path) -> None:
    full = fashion_mnist(train=False, transform=None, root=str(idx_root))
    part = subset(full, [5, 2, 10_000_000])  # an index past the end is dropped
    images, labels = raw_tensors(part)
    assert len(part) == 2 and images.dtype == torch.uint8 and images.shape == (2, 28, 28)
    assert torch.equal(images, full.data[[5, 2]]) and labels.tolist() == full.targets[[5, 2]].tolist()


def test_the_offline_first_lookup_says_what_it_tried(tmp_path: Path) -> None:
    spec = IdxDataset(title="Acme-MNIST", folder="AcmeMNIST", system_dirs=(str(tmp_path / "system"),),
                      install_hint="install the acme-mnist package")  # fmt: skip
    with pytest.raises(UsageError) as caught:
        resolve_root(spec, None, download=True, downloader=lambda folder: None)  # MLRUN_OFFLINE is set
    text = caught.value.render()
    assert "Acme-MNIST not found. Tried:" in text and "not attempted (MLRUN_OFFLINE is set)" in text
    assert "install the acme-mnist package" in text
    assert not (tmp_path / "user-data" / "AcmeMNIST").exists()  # a failed search leaves nothing behind


# ------------------------------------------------------------------ validate_params, import cost


def test_validate_params_is_exported_and_checks_like_a_recipe() -> None:
    from mlrun import validate_params
    from mlrun.params import validate_params as original

    assert validate_params is original
    component = Dataset("fashion_subset", fashion_subset, "subset")
    assert validate_params(component, {"size": 10})[1] == []
    ((key, message),) = validate_params(component, {"size": 0})[1]
    assert key == "size" and "greater than 0" in message


def test_import_mlrun_stays_light() -> None:
    code = "import sys, mlrun; print(sorted(m for m in ('torch', 'pydantic', 'mlrun.testing') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


# ------------------------------------------------------------------ our name, and the other `mlrun`


def test_the_distribution_is_torch_mlrun() -> None:
    assert mlrun.DISTRIBUTION == "torch-mlrun"
    assert mlrun.__version__ == metadata.version("torch-mlrun") != "0+unknown"
    assert mlrun.CONFLICT is None


def fake_distribution(site: Path, name: str, version: str, console_script: str) -> None:
    """A dist-info folder only: metadata as pip leaves it, with no module to shadow ours."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[console_scripts]\nmlrun = {console_script}\n")


def test_the_other_mlrun_installed_alongside_is_named_with_the_fix(site: Path) -> None:
    fake_distribution(site, "mlrun", "1.12.1", "mlrun.__main__:main")
    result = run_cli("list")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: the package 'mlrun' 1.12.1 is installed in this environment: ")
    assert f"not this framework ('torch-mlrun' {mlrun.__version__})" in result.stderr
    assert "`pip uninstall mlrun`, then reinstall this framework: `pip install --force-reinstall" in result.stderr
    assert "separate virtual environments" in result.stderr and "Traceback" not in result.stderr
    code = "import mlrun\ntry:\n    mlrun.train\nexcept ImportError as exc:\n    print('refused:', exc)"
    api = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert api.stdout.startswith("refused: the package 'mlrun' 1.12.1 is installed"), api.stdout + api.stderr


def test_this_frameworks_own_metadata_from_before_the_rename_is_no_conflict(site: Path) -> None:
    fake_distribution(site, "mlrun", "0.1.0", "mlrun.cli:main")  # a stale egg-info of the old name
    result = run_cli("list", "model", env={"MLRUN_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == 0 and "classifier" in result.stdout, result.stderr
    assert os.environ["PYTHONPATH"].startswith(str(site))  # the fake was visible to the command
