"""Dataset files are found offline first, and a failed search leaves nothing behind."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from mlrun.data import IdxDataset, has_files, resolve_root
from mlrun.errors import UsageError

from idx import write_dataset


def spec_with_system_copy(system: Path) -> IdxDataset:
    return IdxDataset(title="Fashion-MNIST", folder="FashionMNIST", system_dirs=(str(system),),
                      install_hint="apt-get install dataset-fashion-mnist")  # fmt: skip


def gzipped_system_copy(tmp_path: Path) -> Path:
    """A folder shaped like Debian's /usr/share/datasets/fashion-mnist (gzipped IDX files)."""
    source = write_dataset(tmp_path / "plain", "FashionMNIST", train=20, test=10)
    system = tmp_path / "system"
    system.mkdir()
    for file in (source / "FashionMNIST" / "raw").iterdir():
        (system / f"{file.name}.gz").write_bytes(gzip.compress(file.read_bytes()))
    return system


def test_explicit_root_with_files_is_used_as_is(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "mine", "FashionMNIST", train=10, test=10)
    assert resolve_root(spec_with_system_copy(tmp_path / "none"), str(root), download=False) == root


def test_system_copy_is_unpacked_once_into_the_user_data_dir(tmp_path: Path) -> None:
    spec = spec_with_system_copy(gzipped_system_copy(tmp_path))
    root = resolve_root(spec, None, download=False)
    assert root == tmp_path / "user-data"  # MLRUN_DATA_DIR, set by the autouse fixture
    assert has_files(root, spec)
    raw = root / "FashionMNIST" / "raw"
    assert (raw / "train-images-idx3-ubyte").read_bytes()[:4] == b"\x00\x00\x08\x03"
    before = (raw / "train-images-idx3-ubyte").stat().st_mtime_ns
    assert resolve_root(spec, None, download=False) == root
    assert (raw / "train-images-idx3-ubyte").stat().st_mtime_ns == before  # not unpacked again


def test_an_empty_explicit_root_is_not_swapped_for_the_user_data_dir(tmp_path: Path) -> None:
    # The recipe records the explicit root: reading another one would make the run unrepeatable.
    write_dataset(tmp_path / "user-data", "FashionMNIST", train=10, test=10)
    spec = spec_with_system_copy(tmp_path / "none")
    with pytest.raises(UsageError) as info:
        resolve_root(spec, str(tmp_path / "empty"), download=False)
    text = info.value.render()
    assert text.startswith("Fashion-MNIST not found. Tried:")
    assert f"drop `--data` / dataset.root to use the complete copy in {tmp_path / 'user-data'}" in text
    assert not (tmp_path / "empty").exists()


def test_nothing_found_names_what_was_tried_and_the_fixes(tmp_path: Path) -> None:
    spec = spec_with_system_copy(tmp_path / "not-installed")
    with pytest.raises(UsageError) as info:
        resolve_root(spec, str(tmp_path / "a" / "b"), download=True, downloader=lambda d: None)
    text = info.value.render()
    assert text.startswith("Fashion-MNIST not found. Tried:")
    assert str(tmp_path / "not-installed") in text and "not installed" in text
    assert "MLRUN_OFFLINE is set" in text
    assert "apt-get install dataset-fashion-mnist" in text and "--data DIR" in text
    assert not (tmp_path / "a").exists()


def test_failed_download_leaves_no_partial_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLRUN_OFFLINE")
    spec = spec_with_system_copy(tmp_path / "not-installed")

    def half_download(folder: Path) -> None:
        raw = folder / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        (raw / "train-images-idx3-ubyte").write_bytes(b"partial")
        raise ConnectionError("network is unreachable")

    target = tmp_path / "new" / "data"
    with pytest.raises(UsageError) as info:
        resolve_root(spec, str(target), download=True, downloader=half_download)
    assert "download: failed (ConnectionError: network is unreachable)" in info.value.render()
    assert not (tmp_path / "new").exists()


def test_successful_download_lands_in_the_raw_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLRUN_OFFLINE")
    spec = spec_with_system_copy(tmp_path / "not-installed")
    target = resolve_root(
        spec, str(tmp_path / "dl"), download=True,
        downloader=lambda folder: write_dataset(folder, "FashionMNIST", train=5, test=5),
    )  # fmt: skip
    assert has_files(target, spec)
    assert sorted(p.name for p in (target / "FashionMNIST").iterdir()) == ["raw"]  # no staging left
