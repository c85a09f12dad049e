"""Photo transforms: torchvision's semantics, and batch versions exactly equal to the per-sample ones."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms as tv
from torchvision.transforms import functional as F

from mlrun.builtins import photo_ops
from mlrun.builtins import photo_transforms as pt
from mlrun.errors import UsageError
from mlrun.recipe import load_recipe
from mlrun.testing import check_plugin

from conftest import write_recipe

GEN = torch.Generator().manual_seed(0)
GRAY = torch.randint(0, 256, (6, 30, 26), generator=GEN, dtype=torch.uint8)
RGB = torch.randint(0, 256, (6, 30, 26, 3), generator=GEN, dtype=torch.uint8)
RANDOM = {
    "random_resized_crop": (pt.random_resized_crop, pt.random_resized_crop_batch, {"size": [20, 24]}),
    "color_jitter": (pt.color_jitter, pt.color_jitter_batch, {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}),
    "random_affine": (pt.random_affine, pt.random_affine_batch, {"degrees": 30.0, "translate": [0.1, 0.2], "scale": [0.8, 1.2], "shear": 10.0}),
}  # fmt: skip


def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.numpy())


def _array(image: Image.Image) -> torch.Tensor:
    import numpy

    return torch.from_numpy(numpy.array(image))


@pytest.mark.slow
@pytest.mark.parametrize("images", [GRAY[:4, :28, :28], RGB[:4]], ids=["gray", "rgb"])
def test_the_conformance_kit_passes_every_photo_transform(images: torch.Tensor) -> None:
    preset = "imagenet" if images.dim() == 4 else "mnist"
    report = check_plugin(
        "mlrun.builtins.photo_transforms", images=images, params={"normalize_preset": {"preset": preset}}
    )
    assert not report.skipped, report
    assert {f"transform:{name}:batch" for name in RANDOM} <= set(report.passed)


@pytest.mark.parametrize("name", list(RANDOM))
@pytest.mark.parametrize("images", [GRAY, RGB], ids=["gray", "rgb"])
def test_a_seeded_random_batch_is_exactly_the_samples_one_by_one(name: str, images: torch.Tensor) -> None:
    per_sample, batch, params = RANDOM[name]
    one, many = per_sample(**params), batch(**params)
    torch.manual_seed(3)
    expected = torch.stack([_array(one(_pil(image))) for image in images])
    torch.manual_seed(3)
    got = many(images.clone())
    assert torch.equal(got, expected)
    assert len({bytes(sample.flatten().numpy()) for sample in got}) == len(images)  # each drew its own
    floats = images.float().div(255)
    floats = floats.unsqueeze(1) if floats.dim() == 3 else floats.permute(0, 3, 1, 2)
    torch.manual_seed(4)
    expected_f = torch.stack([one(sample) for sample in floats])
    torch.manual_seed(4)
    assert torch.equal(many(floats.clone()), expected_f)


def test_grayscale_is_pil_s_conversion_and_gives_one_or_three_channels() -> None:
    images = RGB
    got = pt.grayscale_batch(1)(images.clone())
    assert torch.equal(got, torch.stack([_array(_pil(image).convert("L")) for image in images]))
    three = pt.grayscale_batch(3)(GRAY.clone())
    assert three.shape == (*GRAY.shape, 3) and torch.equal(three[..., 2], GRAY)
    assert pt.grayscale(3)(_pil(GRAY[0])).mode == "RGB"
    assert torch.equal(_array(pt.grayscale(1)(_pil(RGB[0]))), _array(tv.Grayscale(1)(_pil(RGB[0]))))
    floats = RGB.permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(pt.grayscale_batch(1)(floats.clone()), F.rgb_to_grayscale(floats))


@pytest.mark.parametrize("size", [20, [30, 10], 32, [31, 27]])
def test_center_crop_is_torchvision_s_including_the_padding(size: int | list[int]) -> None:
    expected = torch.stack([_array(tv.CenterCrop(size)(_pil(image))) for image in RGB])
    assert torch.equal(pt.center_crop_batch(size)(RGB.clone()), expected)


def test_a_resized_crop_is_torchvision_s_bilinear_crop_for_the_same_box() -> None:
    image = RGB[:1].permute(0, 3, 1, 2).float() / 255
    for box in ([0, 0, 30, 26], [3, 5, 11, 17], [10, 2, 20, 7]):
        got = photo_ops.resized_crop(image, torch.tensor([box]), 24, 20)
        expected = F.resized_crop(image, *box, [24, 20], antialias=False)
        assert torch.allclose(got, expected, atol=1e-5)


def test_crop_boxes_fit_the_image_and_fall_back_to_the_centre() -> None:
    boxes = photo_ops.crop_boxes(torch.rand(500, 40), 30, 26, [0.08, 1.0], [3 / 4, 4 / 3])
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 30).all() and (left + w <= 26).all()
    assert len(set(boxes[:, 2].tolist())) > 10  # the sizes vary
    # An aspect ratio no box of the image can have: torchvision's central fallback.
    fallback = photo_ops.crop_boxes(torch.rand(3, 40), 30, 26, [1.0, 1.0], [10.0, 12.0])
    expected = list(tv.RandomResizedCrop.get_params(torch.zeros(1, 30, 26), [1.0, 1.0], [10.0, 12.0]))
    assert fallback.tolist() == [expected] * 3


def test_affine_shifts_by_whole_pixels_and_rotates_like_torchvision() -> None:
    image = torch.arange(49, dtype=torch.float32).view(1, 1, 7, 7)
    shifted = photo_ops.affine(image, torch.tensor([[0.5, 1.0, 0.5, 0.5, 0.5]]), 0.0, [2 / 7, 0.0], [1.0, 1.0], 0.0)
    assert torch.equal(shifted[..., 2:], image[..., :5]) and (shifted[..., :2] == 0).all()
    turned = photo_ops.affine(image, torch.tensor([[1.0, 0.5, 0.5, 0.5, 0.5]]), 90.0, [0.0, 0.0], [1.0, 1.0], 0.0)
    assert torch.equal(turned, F.affine(image, 90.0, [0, 0], 1.0, [0.0, 0.0]))


def test_colour_operations_match_torchvision_s_for_the_same_factor() -> None:
    image = RGB[:2].permute(0, 3, 1, 2).float() / 255
    reference = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
    for op, factor in ((0, 1.3), (1, 0.7), (2, 1.4), (3, 0.1)):
        got = photo_ops.adjust(image.clone(), op, torch.full((2,), factor))
        assert torch.allclose(got, reference[op](image, factor), atol=1e-5), op


def test_normalize_preset_gives_imagenet_statistics_and_refuses_the_wrong_channels() -> None:
    image = torch.rand(3, 4, 4)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(pt.normalize_preset()(image), (image - mean[:, None, None]) / std[:, None, None])
    with pytest.raises(ValueError, match="3-channel .* add grayscale with num_output_channels = 3"):
        pt.normalize_preset("imagenet")(torch.rand(1, 4, 4))


def test_decode_steps_are_marked_and_only_resize_lacks_a_batch_version(registry) -> None:
    names = ("resize", "center_crop", "grayscale", "normalize_preset", *RANDOM)
    found = {name: registry.get("transform", name).component for name in names}
    assert {n for n, c in found.items() if c.decode} == {"resize", "center_crop", "grayscale"}
    assert {n for n, c in found.items() if c.batch is None} == {"resize"}
    assert {n for n, c in found.items() if c.random} == set(RANDOM)


def test_bad_photo_transform_parameters_are_refused_with_the_fix(registry, tmp_path) -> None:
    path = write_recipe(tmp_path / "r.toml", """\
[dataset]
name = "synthetic"
[[transforms]]
name = "random_resized_crop"
scale = [0.9, 0.2]
[[transforms]]
name = "normalize_preset"
preset = "imagenette"
[[transforms]]
name = "grayscale"
num_output_channels = 2
[model]
name = "mlp"
[criterion]
name = "cross_entropy"
[optimizer]
name = "adam"
""")  # fmt: skip
    with pytest.raises(UsageError) as info:
        load_recipe(path, registry)
    text = info.value.render()
    assert "scale: [0.9, 0.2] must be [low, high]" in text
    assert "transforms.1.preset" in text and "did you mean 'imagenet'" in text
    assert "transforms.2.num_output_channels" in text
