"""Issue #10: mlrun never destroys user data, honours an explicit root, and rejects bad IDX files early.

Each test reproduces one case of the report; the data-loss cases run through the CLI.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import mlrun.data
from mlrun.data import IdxDataset, has_files, resolve_root
from mlrun.errors import UsageError
from mlrun.idx import read_split

from conftest import RECIPES, run_cli
from idx import make_images, write_dataset, write_idx

SUMMARY = str(RECIPES / "summary.toml")
FILES = IdxDataset(title="x", folder="x").files


def spec_for(system: Path, **changes: object) -> IdxDataset:
    spec = IdxDataset(title="Fashion-MNIST", folder="FashionMNIST", system_dirs=(str(system),),
                      install_hint="apt-get install dataset-fashion-mnist")  # fmt: skip
    return dataclasses.replace(spec, **changes)


def gzip_folder(source: Path, dest: Path) -> Path:
    """Gzip every file of ``source`` into ``dest`` (NAME -> NAME.gz); returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        (dest / f"{file.name}.gz").write_bytes(gzip.compress(file.read_bytes()))
    return dest


def system_copy(tmp_path: Path, train: int = 20) -> Path:
    """A fake Debian system copy: the four IDX files, gzipped, in one folder."""
    plain = write_dataset(tmp_path / "plain", "FashionMNIST", train=train, test=10)
    return gzip_folder(plain / "FashionMNIST" / "raw", tmp_path / "system")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# 1. data loss: the user's own .gz files, through the CLI
@pytest.mark.slow
def test_users_own_gz_files_are_kept_byte_identical_and_unpacked_next_to_them(tmp_path: Path) -> None:
    # The user's own data (seed 7), not the system copy's: it must be what gets trained on.
    own = write_dataset(tmp_path / "own", "FashionMNIST", train=20, test=10, seed=7) / "FashionMNIST" / "raw"
    data = tmp_path / "X"
    raw = gzip_folder(own, data / "FashionMNIST" / "raw")
    (raw / "notes.txt").write_text("downloaded by hand\n")
    before = snapshot(raw)

    result = run_cli(SUMMARY, "--data", str(data), "train.epochs=1", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "(20 train / 10 test samples)" in result.stdout
    assert {name: snapshot(raw)[name] for name in before} == before  # nothing changed or removed
    for name in FILES:  # added next to the .gz files, unpacked from them
        assert (raw / name).read_bytes() == (own / name).read_bytes()


def test_a_damaged_gz_of_the_user_is_an_error_naming_it_and_nothing_is_added(tmp_path: Path) -> None:
    root = tmp_path / "X"
    raw = gzip_folder(write_dataset(tmp_path / "own", "FashionMNIST", 20, 10) / "FashionMNIST" / "raw",
                      root / "FashionMNIST" / "raw")  # fmt: skip
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    before = snapshot(root)
    with pytest.raises(UsageError, match="t10k-images-idx3-ubyte.gz: not a valid gzip file"):
        resolve_root(spec_for(tmp_path / "none"), str(root), download=False)
    assert snapshot(root) == before  # no file added, no lock left behind


# 1. data loss: three of the four IDX files plus a notes file, through the CLI
def test_three_of_four_files_and_notes_is_an_error_naming_the_missing_one(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "X", "FashionMNIST", train=20, test=10)
    raw = data / "FashionMNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "notes.txt").write_text("my experiment\n")
    before = snapshot(data)

    result = run_cli(SUMMARY, "--data", str(data), "train.epochs=1", cwd=tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"Fashion-MNIST in {raw} is incomplete: 1 of 4 IDX files missing" in result.stderr
    assert "missing: t10k-labels-idx1-ubyte" in result.stderr
    assert "add the missing files" in result.stderr and "--data DIR" in result.stderr
    assert snapshot(data) == before  # untouched, no lock file left behind
    assert not (tmp_path / "runs").exists()


# 1. an explicit root is honoured: no silent fallback to the user data dir
def test_an_incomplete_explicit_root_does_not_fall_back_to_the_user_data_dir(tmp_path: Path) -> None:
    write_dataset(tmp_path / "user-data", "FashionMNIST", train=10, test=10)  # a complete copy
    data = write_dataset(tmp_path / "X", "FashionMNIST", train=10, test=10)
    (data / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").unlink()
    with pytest.raises(UsageError) as info:
        resolve_root(spec_for(system_copy(tmp_path)), str(data), download=False)
    text = info.value.render()
    assert "missing: train-images-idx3-ubyte" in text
    assert f"drop `--data` / dataset.root to use the complete copy in {tmp_path / 'user-data'}" in text
    assert not (data / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_an_existing_empty_raw_folder_is_filled_in_place(tmp_path: Path) -> None:
    raw = tmp_path / "X" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    spec = spec_for(system_copy(tmp_path))
    assert resolve_root(spec, str(tmp_path / "X"), download=False) == tmp_path / "X"
    assert has_files(tmp_path / "X", spec)
    assert sorted(p.name for p in raw.iterdir()) == sorted(FILES)  # no scratch folder left


# 1. first-time unpacking is serialised: runs (or DDP ranks) starting together all succeed
def test_concurrent_first_unpacks_all_succeed_and_unpack_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_for(system_copy(tmp_path))
    calls: list[str] = []
    unpack = mlrun.data._unpack

    def slow_unpack(source: Path, dest: Path) -> str:
        calls.append(source.name)
        time.sleep(0.02)  # widen the window in which an unlocked second run would interfere
        return unpack(source, dest)

    monkeypatch.setattr(mlrun.data, "_unpack", slow_unpack)
    for attempt in range(3):
        target = tmp_path / f"data{attempt}"
        start = threading.Barrier(4)
        results: list[object] = []

        def run() -> None:
            start.wait()
            try:
                results.append(resolve_root(spec, str(target), download=False))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                results.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [target] * 4
        assert sorted(p.name for p in (target / "FashionMNIST").iterdir()) == ["raw"]
    assert len(calls) == 3 * len(FILES)  # once per target: the others waited and found the files


def test_processes_unpacking_together_all_succeed(tmp_path: Path) -> None:
    system = system_copy(tmp_path, train=6000)  # big enough for the unpacking runs to overlap
    script = (
        "import time; from mlrun.data import IdxDataset, resolve_root\n"
        f"spec = IdxDataset(title='F', folder='FashionMNIST', system_dirs=({str(system)!r},))\n"
        f"time.sleep(max(0, {time.time() + 2} - time.time()))  # start together, like DDP ranks\n"
        f"print(resolve_root(spec, {str(tmp_path / 'shared')!r}, download=False))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]  # fmt: skip
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    assert has_files(tmp_path / "shared", spec_for(system))


# 2. bad IDX files: an error naming the file, before anything is allocated
def idx_bytes(tensor: torch.Tensor) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, tensor.dim()) + b"".join(struct.pack(">I", d) for d in tensor.shape)
    return header + tensor.contiguous().numpy().tobytes()


IMAGES, LABELS = make_images(5, seed=0)
BAD_IDX = {
    "truncated header": ("images", b"\x00\x00\x08", "truncated IDX header"),
    "truncated dimensions": ("images", idx_bytes(IMAGES)[:9], "truncated IDX header"),
    "bad magic number": ("images", b"\x00\x00\x0d\x03" + idx_bytes(IMAGES)[4:], "bad magic number"),
    "count 0xFFFFFFFF": ("images", struct.pack(">HBBIII", 0, 8, 3, 0xFFFFFFFF, 28, 28) + bytes(784), "truncated: the header declares 4294967295 x 28 x 28"),
    "truncated data": ("images", idx_bytes(IMAGES)[:-100], "truncated"),
    "trailing bytes": ("labels", idx_bytes(LABELS) + b"\x00", "longer than its header says"),
    "images not 28x28": ("images", idx_bytes(IMAGES[:, :, :27]), "expected images of shape N x 28 x 28"),
    "images not 3-d": ("images", idx_bytes(IMAGES.reshape(5, 784)), "holds 2-d data of shape 5 x 784"),
    "labels not 1-d": ("labels", idx_bytes(LABELS.reshape(5, 1)), "expected labels of shape N"),
    "swapped files": ("images", idx_bytes(LABELS), "(it looks like the labels file)\n  are the images and labels files swapped"),
    "count mismatch": ("labels", idx_bytes(LABELS[:4]), "holds 5 images but"),
    "label out of range": ("labels", idx_bytes(torch.tensor([1, 2, 10, 3, 4], dtype=torch.uint8)), "label 10 at index 2 is out of range for 10 classes"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_IDX))
def test_a_bad_idx_file_is_an_error_naming_it_without_allocating(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    which, content, expected = BAD_IDX[case]
    image_file, label_file = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    write_idx(image_file, IMAGES)
    write_idx(label_file, LABELS)
    bad = image_file if which == "images" else label_file
    bad.write_bytes(content)
    if case != "label out of range":  # the labels must be read to check their values

        def no_allocation(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"allocated {args} for a bad file")

        monkeypatch.setattr(torch, "empty", no_allocation)
    start = time.monotonic()
    with pytest.raises(UsageError) as info:
        read_split(image_file, label_file, num_classes=10)
    assert time.monotonic() - start < 1
    text = info.value.render()
    assert text.startswith(str(bad) if case != "count mismatch" else str(image_file))
    assert str(bad) in str(info.value) and expected in text and "To fix" in text


def test_a_bad_idx_file_stops_the_dataset_before_training(tmp_path: Path) -> None:
    from mlrun.builtins import datasets

    root = write_dataset(tmp_path / "X", "FashionMNIST", train=5, test=5)
    labels = root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(torch.tensor([0, 1, 2, 3, 12], dtype=torch.uint8)))
    datasets.fashion_mnist(train=True, transform=None, root=str(root))  # the train split is fine
    with pytest.raises(UsageError, match=f"{labels}: label 12 at index 4 is out of range"):
        datasets.fashion_mnist(train=False, transform=None, root=str(root))


# 3. checksums of a system copy, checked when it is unpacked
def test_a_system_copy_with_a_wrong_checksum_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    system = system_copy(tmp_path)
    good = {name: hashlib.md5(gzip.decompress((system / f"{name}.gz").read_bytes())).hexdigest() for name in FILES}
    damaged = dict(good, **{"t10k-images-idx3-ubyte": "0" * 32})
    with pytest.raises(UsageError) as info:
        resolve_root(spec_for(system, md5=tuple(damaged.items())), None, download=False)
    text = info.value.render()
    assert f"{system / 't10k-images-idx3-ubyte.gz'}: checksum mismatch" in text and "reinstall it" in text
    assert not (tmp_path / "user-data").exists()  # no folder, no lock file, no partial files
    # the same copy with its right checksums is unpacked
    assert resolve_root(spec_for(system, md5=tuple(good.items())), None, download=False) == tmp_path / "user-data"


@pytest.mark.slow
@pytest.mark.real_data
def test_the_installed_fashion_mnist_matches_the_official_checksums(tmp_path: Path) -> None:
    from mlrun.builtins.datasets import FASHION_MNIST

    # present: tests/conftest.py skips (or, in CI, fails) every real_data test when it is not
    assert resolve_root(FASHION_MNIST, str(tmp_path / "real"), download=False) == tmp_path / "real"


# 4. --data pointing at a regular file
def test_data_pointing_at_a_file_says_so(tmp_path: Path) -> None:
    file = tmp_path / "train-images-idx3-ubyte.gz"
    file.write_bytes(b"not a folder")
    result = run_cli(SUMMARY, "--data", str(file), "train.epochs=1", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"{file} is a file, not a folder" in result.stderr and "--data DIR" in result.stderr
    assert file.read_bytes() == b"not a folder"
