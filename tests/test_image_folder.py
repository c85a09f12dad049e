"""The image_folder dataset: layout and bad-input errors, the seeded split, the decode stage, run.json."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mlrun import Transform, batches, build, dataset_info, engine, hookimpl
from mlrun.builtins.image_folder import image_folder
from mlrun.decode_stage import DecodeStage, split_decode
from mlrun.errors import UsageError
from mlrun.plugins import PluginInfo, PluginSettings, load_plugins
from mlrun.recipe import load_recipe
from mlrun.registry import build_registry

from conftest import QUIET, write_recipe
from images import write_images


def shrink(size: int = 14) -> Any:
    """A test decode step: PIL resize to size x size."""
    return lambda image: image.resize((size, size), Image.BILINEAR)


@pytest.fixture(scope="module")
def photo_registry():
    """The built-ins plus a test plugin with a decode transform (``test_shrink``)."""

    @hookimpl
    def register_transforms() -> list[Transform]:
        return [Transform("test_shrink", shrink, "resize to size x size (test decode step)", decode=True)]

    plugin = types.SimpleNamespace(__name__="photo-fakes", register_transforms=register_transforms)
    loaded = load_plugins(PluginSettings(autoload=False))
    loaded.infos[plugin.__name__] = PluginInfo(name=plugin.__name__, distribution=plugin.__name__, version="1.0")
    loaded.manager.register(plugin, name=plugin.__name__)
    return build_registry(loaded)


RECIPE = """\
[dataset]
name = "image_folder"
root = "{root}"
test_fraction = 0.25
{dataset_extra}
{decode}
[[transforms]]
name = "to_tensor"

[[transforms]]
name = "random_horizontal_flip"

[[transforms]]
name = "flatten"

[model]
name = "mlp"
input_size = {inputs}
hidden_sizes = [16]
num_classes = 3

[criterion]
name = "cross_entropy"

[optimizer]
name = "adam"
lr = 0.01

[train]
epochs = 2
batch_size = 8
val_fraction = 0.2
"""
SHRINK = '[[transforms]]\nname = "test_shrink"\nsize = 14\n'


def recipe_file(tmp_path: Path, root: Path, *, decode: str = SHRINK, inputs: int = 196, extra: str = "") -> Path:
    text = RECIPE.format(root=root, decode=decode, inputs=inputs, dataset_extra=extra)
    return write_recipe(tmp_path / "images.toml", text)


def cache_files() -> list[Path]:
    return sorted((Path.cwd() / "user-data" / "image-cache").glob("*"))


PHOTO_DECODE = '[[transforms]]\nname = "resize"\nsize = [14, 14]\n\n[[transforms]]\nname = "grayscale"\n'


@pytest.mark.slow
def test_memory_and_loader_paths_train_identically(photo_registry, tmp_path: Path) -> None:
    root = write_images(tmp_path / "photos", rgb=True, size=(20, 24))
    write_images(tmp_path / "photos", rgb=True, per_class=2, size=(31, 17), seed=5)  # two per class now of another size
    path = recipe_file(tmp_path, root, decode=PHOTO_DECODE, inputs=14 * 14)
    results = {}
    for data_path in ("memory", "loader"):
        recipe = load_recipe(path, photo_registry, [f"train.data_path={data_path}"])
        assert batches.plan(recipe).path == data_path  # resize has no batch version: it is cached instead
        result = engine.run(recipe, **QUIET)
        weights = torch.load(result.folder.path / "model.pt", weights_only=True)
        results[data_path] = (weights, [(m["train_loss"], m["val_loss"], m["val_accuracy"]) for m in result.metrics])
        status = json.loads((result.folder.path / "run.json").read_text())
        assert status["classes"] == ["class_0", "class_1", "class_2"]
        assert status["input"] == {"mode": "RGB", "size": None}  # the decode stage resizes: any size
    memory, loader = results["memory"], results["loader"]
    assert memory[1] == loader[1]
    assert all(torch.equal(memory[0][k], loader[0][k]) for k in memory[0])


@pytest.mark.slow
def test_run_log_names_the_classes_and_run_json_gives_the_raw_size(photo_registry, tmp_path: Path) -> None:
    root = write_images(tmp_path / "photos")
    recipe = load_recipe(recipe_file(tmp_path, root, decode="", inputs=784), photo_registry, ["train.epochs=1"])
    lines: list[str] = []
    result = engine.run(recipe, echo=lines.append, progress=False)
    assert "classes (3): class_0, class_1, class_2" in lines
    assert any(line.startswith(f"36 images of {root} decoded in") for line in lines)
    status = json.loads((result.folder.path / "run.json").read_text())
    assert status["input"] == {"mode": "L", "size": [28, 28]}


def test_mnist_style_datasets_describe_their_input(registry, small_recipe: Path) -> None:
    recipe = load_recipe(small_recipe, registry)
    built = build.build(recipe)
    fields = dataset_info.status_fields(recipe.dataset.component, built.train_set)
    assert fields["input"] == {"mode": "L", "size": [28, 28]}
    assert fields["classes"][0] == "T-shirt/top" and len(fields["classes"]) == 10


def test_the_decode_stage_is_the_leading_deterministic_decode_transforms(photo_registry, tmp_path: Path) -> None:
    root = write_images(tmp_path / "photos")
    recipe = load_recipe(recipe_file(tmp_path, root, decode=SHRINK), photo_registry)
    names = [spec.component.name for spec in recipe.transforms]
    assert names == ["test_shrink", "to_tensor", "random_horizontal_flip", "flatten"]
    stage, rest = split_decode(recipe.dataset.component, recipe.transforms)
    assert [s.component.name for s in stage] == ["test_shrink"]
    assert [s.component.name for s in rest] == names[1:]
    # a dataset that does not cache gets the whole pipeline, and needs every batch version
    fashion = photo_registry.get("dataset", "fashion_mnist").component
    assert split_decode(fashion, recipe.transforms) == ([], recipe.transforms)
    assert "test_shrink" in str(batches.memory_path_blocker(fashion, recipe.transforms))
    assert batches.memory_path_blocker(recipe.dataset.component, recipe.transforms) is None
    # a random transform ends the stage: what follows it is never cached
    reordered = [recipe.transforms[2], recipe.transforms[0], recipe.transforms[1], recipe.transforms[3]]
    assert split_decode(recipe.dataset.component, reordered)[0] == []


def build_split(root: Path, *, train: bool = True, decode: DecodeStage | None = None, **params: Any):
    return image_folder(train=train, transform=None, decode=decode, root=str(root), **params)


def test_cached_pixels_are_the_decoded_samples(tmp_path: Path) -> None:
    root = write_images(tmp_path / "photos", rgb=True)
    stage = DecodeStage(shrink(10), ({"name": "test_shrink", "params": {"size": 10}},))
    data = build_split(root, decode=stage)
    pixels, labels = data.tensors()
    assert pixels.dtype == torch.uint8 and pixels.shape == (len(data), 10, 10, 3)
    for index in (0, 5, len(data) - 1):
        image, label = data[index]
        assert torch.equal(torch.from_numpy(np.array(image)), pixels[index]) and label == int(labels[index])
    assert data.image_mode == "RGB" and data.image_size is None
    gray = build_split(root, mode="L")
    assert gray.tensors()[0].shape[1:] == (28, 28) and gray.image_size == [28, 28]


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path: Path, monkeypatch) -> None:
    from mlrun import image_cache

    root = write_images(tmp_path / "photos")
    first = build_split(root)
    assert first.decoded.seconds is not None and len(cache_files()) == 1
    opened: list[Path] = []
    real = image_cache.open_image
    monkeypatch.setattr(image_cache, "open_image", lambda path, mode: opened.append(path) or real(path, mode))
    again = build_split(root)
    assert opened == [] and again.decoded.seconds is None  # nothing decoded: read from the cache
    assert torch.equal(again.tensors()[0], first.tensors()[0])
    changed = first.paths[0]
    Image.fromarray(np.full((28, 28), 7, dtype=np.uint8), mode="L").save(changed)
    rebuilt = build_split(root)
    assert rebuilt.decoded.seconds is not None and len(opened) == len(first.decoded.kept)
    assert bool((rebuilt.tensors()[0][0] == 7).all())
    assert [p.name for p in cache_files()] == [rebuilt.decoded.path.name]  # the stale cache is gone


def test_an_interrupted_first_decode_leaves_no_cache(tmp_path: Path) -> None:
    from mlrun import image_cache

    from conftest import interrupted_at

    root = write_images(tmp_path / "photos")
    with interrupted_at(image_cache, "open_image", 20), pytest.raises(KeyboardInterrupt):
        build_split(root)
    assert cache_files() == []  # no cache and no temporary file
    data = build_split(root)
    assert data.decoded.seconds is not None and len(data.tensors()[0]) == len(data)


def test_a_damaged_cache_file_is_decoded_again(tmp_path: Path) -> None:
    root = write_images(tmp_path / "photos")
    path = build_split(root).decoded.path
    path.write_bytes(path.read_bytes()[:-5])  # as if cut short (never renamed into place half-written)
    data = build_split(root)
    assert data.decoded.seconds is not None and data.decoded.path == path


def test_the_seeded_split_is_stratified_and_reproducible(tmp_path: Path) -> None:
    root = write_images(tmp_path / "photos", per_class=10)
    train, test = build_split(root, seed=3), build_split(root, train=False, seed=3)
    assert sorted(train.paths + test.paths) == sorted(p for p in root.rglob("*.png"))
    assert not set(train.paths) & set(test.paths)
    assert sorted(test.targets) == [0, 0, 1, 1, 2, 2]  # 0.2 of each class's 10
    assert build_split(root, train=False, seed=3).paths == test.paths
    assert build_split(root, train=False, seed=4).paths != test.paths


def test_a_separate_test_folder_uses_the_training_classes(tmp_path: Path) -> None:
    root = write_images(tmp_path / "train", per_class=4)
    tests = write_images(tmp_path / "test", classes=3, per_class=2, seed=1)
    (tests / "class_0" / "000.png").rename(tests / "class_0" / "a.png")
    test = build_split(root, train=False, test_root=str(tests))
    assert len(test) == 6 and test.classes == ["class_0", "class_1", "class_2"]
    assert len(build_split(root, test_root=str(tests))) == 12  # the whole root trains
    (tests / "class_9").mkdir()
    Image.new("L", (28, 28)).save(tests / "class_9" / "x.png")
    with pytest.raises(UsageError, match="class_9.*not among the training classes"):
        build_split(root, train=False, test_root=str(tests))


def test_bad_layouts_are_refused_naming_the_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=f"{empty}: the folder is empty") as caught:
        build_split(empty)
    assert "ROOT/<class>/<image>" in caught.value.render()
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("L", (28, 28)).save(loose / "a.png")
    with pytest.raises(UsageError, match=r"no class subfolders \(1 image file directly in it\)") as caught:
        build_split(loose)
    assert "one subfolder per class" in caught.value.render()
    root = write_images(tmp_path / "photos", per_class=2)
    (root / "class_3").mkdir()
    (root / "class_3" / "notes.txt").write_text("not an image")
    with pytest.raises(UsageError, match=f"{root / 'class_3'}: class 'class_3' has no images"):
        build_split(root)
    with pytest.raises(UsageError, match="no such folder") as caught:
        build_split(tmp_path / "missing")
    assert "current folder" in caught.value.render()


def test_a_corrupt_image_is_an_error_or_skipped_and_counted(tmp_path: Path) -> None:
    root = write_images(tmp_path / "photos", per_class=6)
    broken = root / "class_1" / "002.png"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated
    (root / "class_2" / "zz.png").write_bytes(b"not a png at all")
    with pytest.raises(UsageError, match=f"{broken}: not a readable image") as caught:
        build_split(root)
    assert 'on_bad_image = "skip"' in caught.value.render()
    assert cache_files() == []
    data = build_split(root, on_bad_image="skip")
    everything = build_split(root, on_bad_image="skip", test_fraction=0.5)
    assert len(everything) + len(build_split(root, train=False, on_bad_image="skip", test_fraction=0.5)) == 17
    assert f"skipped 2 unreadable image(s) of {root} (the first: {broken})" in data.notes
    assert broken not in data.paths
    with pytest.raises(UsageError, match=f"{broken}: not a readable image"):  # the cache remembers, error mode refuses
        build_split(root)


def test_auto_mode_is_not_decided_by_a_corrupt_first_image(tmp_path: Path) -> None:
    root = write_images(tmp_path / "photos", per_class=4)  # grayscale
    (root / "class_0" / "000.png").write_bytes(b"not a png at all")  # the first file in sorted order
    data = build_split(root, on_bad_image="skip")
    assert data.image_mode == "L" and data.tensors()[0].dim() == 3


def test_images_of_different_sizes_need_a_resize(tmp_path: Path) -> None:
    root = write_images(tmp_path / "photos", per_class=3)
    odd = root / "class_2" / "001.png"
    Image.new("L", (30, 28)).save(odd)
    with pytest.raises(UsageError, match="differ in size and the recipe does not resize them") as caught:
        build_split(root)
    assert odd.name in str(caught.value) and '"resize"' in caught.value.render()
    stage = DecodeStage(shrink(12), ({"name": "test_shrink", "params": {"size": 12}},))
    assert build_split(root, decode=stage).tensors()[0].shape[1:] == (12, 12)


def test_a_killed_runs_temporary_file_is_removed_once_stale(tmp_path: Path) -> None:
    import os

    root = write_images(tmp_path / "photos", per_class=2)
    cache = build_split(root).decoded.path
    slot = cache.name.split("-")[0]
    stale, fresh = cache.parent / f".{slot}-dead.bin.abc.tmp", cache.parent / f".{slot}-live.bin.def.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (1, 1))  # untouched for ages: its writer is gone
    os.utime(root / "class_0" / "000.png", ns=(1, 1))  # a changed file: the cache is rebuilt
    build_split(root)
    assert not stale.exists() and fresh.exists()  # a live writer's file is left alone


def test_a_progress_bar_shows_the_first_decode_on_a_terminal(tmp_path: Path, monkeypatch) -> None:
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = write_images(tmp_path / "photos", per_class=2)
    monkeypatch.setattr(sys, "stderr", Terminal())
    build_split(root)
    assert f"decoding {root}" in sys.stderr.getvalue() and "/6 [" in sys.stderr.getvalue()  # of 6 images
    monkeypatch.setattr(sys, "stderr", Terminal())
    build_split(root)  # read from the cache: nothing to show
    assert sys.stderr.getvalue() == ""
