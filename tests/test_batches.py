"""The in-memory fast path gives the same tensors and the same training as the per-sample path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from mlrun import batches, build, engine
from mlrun.builtins import transforms as T
from mlrun.errors import UsageError
from mlrun.recipe import ComponentSpec, load_recipe

from conftest import QUIET, RECIPES


def per_sample_and_batch(recipe, *, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    built = build.build(recipe)
    dataset = built.train_set if train else built.test_set
    count = 50
    per_sample = default_collate([dataset[i][0] for i in range(count)])
    inputs, _ = recipe.dataset.component.tensors(dataset)
    batch = batches.batch_pipeline(recipe.transforms, train=train)(inputs[:count])
    return per_sample, batch


@pytest.mark.parametrize(
    ("overrides", "extra"),
    [([], None), (["transforms.1.mean=[0.2860]", "transforms.1.std=[0.3530]"], None), ([], "flatten")],
    ids=["summary", "dataset-stats", "flatten"],
)  # fmt: skip
def test_batch_transforms_give_identical_tensors(
    registry, idx_root: Path, overrides: list[str], extra: str | None
) -> None:
    recipe = load_recipe(RECIPES / "summary.toml", registry, [f"dataset.root={idx_root}", *overrides])
    if extra:
        recipe.transforms.append(ComponentSpec(registry.get("transform", extra), {}))
    per_sample, batch = per_sample_and_batch(recipe, train=True)
    assert per_sample.dtype == batch.dtype and per_sample.shape == batch.shape
    assert torch.equal(per_sample, batch)


def test_flip_and_crop_batch_versions_match_their_per_sample_effect() -> None:
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    assert torch.equal(T.random_horizontal_flip_batch(1.0)(images), images.flip(-1))
    assert torch.equal(T.random_horizontal_flip_batch(0.0)(images), images)
    assert torch.equal(T.random_crop_batch(size=28, padding=0)(images), images)
    cropped = T.random_crop_batch(size=28, padding=4)(images)
    assert cropped.shape == images.shape and cropped.dtype == torch.uint8
    # each crop is a window of the zero-padded image
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for sample, crop in zip(padded, cropped):
        windows = sample.unfold(0, 28, 1).unfold(1, 28, 1)  # 9 x 9 x 28 x 28
        assert (windows == crop).all(dim=-1).all(dim=-1).any()


def test_flip_and_crop_treat_raw_colour_samples_as_channels_last() -> None:
    """Raw RGB samples (uint8 N x H x W x C, as an image folder caches them) flip and crop along H and W."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms.functional import hflip

    images = torch.randint(0, 256, (4, 12, 10, 3), dtype=torch.uint8)
    flipped = T.random_horizontal_flip_batch(1.0)(images.clone())
    for image, mirrored in zip(images, flipped):
        assert torch.equal(mirrored, torch.from_numpy(np.array(hflip(Image.fromarray(image.numpy())))))
    torch.manual_seed(0)
    cropped = T.random_crop_batch(size=8, padding=2)(images.clone())
    torch.manual_seed(0)
    as_planes = T.random_crop_batch(size=8, padding=2)(images.permute(0, 3, 1, 2).float())
    assert cropped.shape == (4, 8, 8, 3)
    assert torch.equal(cropped.float(), as_planes.permute(0, 2, 3, 1))


def test_memory_and_loader_paths_train_identically(registry, small_recipe: Path) -> None:
    results = {}
    for path in ("memory", "loader"):
        recipe = load_recipe(small_recipe, registry, [f"train.data_path={path}"])
        result = engine.run(recipe, **QUIET)
        weights = torch.load(result.folder.path / "model.pt", weights_only=True)
        results[path] = (weights, [(m["train_loss"], m["test_loss"], m["test_accuracy"]) for m in result.metrics])
    memory, loader = results["memory"], results["loader"]
    assert memory[1] == loader[1]
    assert all(torch.equal(memory[0][k], loader[0][k]) for k in memory[0])


def test_auto_takes_the_memory_path_for_the_summary(registry, small_recipe: Path) -> None:
    chosen = batches.plan(load_recipe(small_recipe, registry))
    assert chosen.path == "memory"


def test_random_transform_without_batch_version_falls_back_to_the_loader(registry, small_recipe: Path) -> None:
    text = small_recipe.read_text().replace(
        '[[transforms]]\nname = "to_tensor"',
        '[[transforms]]\nname = "random_rotation"\n\n[[transforms]]\nname = "to_tensor"',
    )
    small_recipe.write_text(text)
    recipe = load_recipe(small_recipe, registry)
    chosen = batches.plan(recipe)
    assert chosen == batches.DataPlan("loader", "transform 'random_rotation' has no batch version")
    lines: list[str] = []
    engine.run(load_recipe(small_recipe, registry, ["train.epochs=1"]), echo=lines.append, progress=False)
    assert "data path: loader (transform 'random_rotation' has no batch version)" in lines
    forced = load_recipe(small_recipe, registry, ["train.data_path=memory"])  # validation does no I/O
    with pytest.raises(
        UsageError, match="train.data_path: 'memory' is not possible: transform 'random_rotation' has no batch version"
    ):
        build.preflight(forced)


def test_random_transforms_with_batch_versions_stay_on_the_memory_path(registry, small_recipe: Path) -> None:
    text = small_recipe.read_text().replace(
        '[[transforms]]\nname = "to_tensor"',
        '[[transforms]]\nname = "random_crop"\n\n[[transforms]]\nname = "random_horizontal_flip"\n\n[[transforms]]\nname = "to_tensor"',
    )
    small_recipe.write_text(text)
    recipe = load_recipe(small_recipe, registry, ["train.epochs=1"])
    assert batches.plan(recipe).path == "memory"
    result = engine.run(recipe, **QUIET)
    assert result.final_accuracy > 0.5
    # evaluation batches never see the random transforms
    built = build.build(recipe)
    plain, augmented = per_sample_and_batch(recipe, train=False)
    assert torch.equal(plain, augmented)
    assert built.test_set[0][0].shape == (1, 28, 28)


def test_forcing_the_loader_path(registry, small_recipe: Path) -> None:
    chosen = batches.plan(load_recipe(small_recipe, registry, ["train.data_path=loader"]))
    assert chosen == batches.DataPlan("loader", 'train.data_path = "loader"')
