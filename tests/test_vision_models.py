"""The torchvision model component: architectures by name, cached pretrained weights only, channel checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from mlrun import engine
from mlrun.builtins import vision_models
from mlrun.errors import UsageError
from mlrun.recipe import load_recipe
from mlrun.testing import check_plugin

from conftest import QUIET, write_recipe

RECIPE = """\
[dataset]
name = "synthetic"
size = 64
num_classes = 4
{transforms}
[[transforms]]
name = "to_tensor"

[model]
name = "torchvision"
{model}

[criterion]
name = "cross_entropy"

[optimizer]
name = "adam"
lr = 0.003

[train]
epochs = 1
batch_size = 32
"""


def _recipe(registry, tmp_path: Path, model: str, transforms: str = "") -> object:
    path = write_recipe(tmp_path / "r.toml", RECIPE.format(model=model, transforms=transforms))
    return load_recipe(path, registry)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty local torch cache of its own."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.mark.slow
def test_the_conformance_kit_passes_the_model_component() -> None:
    report = check_plugin(
        "mlrun.builtins.vision_models", params={"torchvision": {"arch": "squeezenet1_1", "in_channels": 1}}
    )
    assert "model:torchvision:output" in report.passed


def test_an_unknown_architecture_is_refused_with_a_suggestion(registry, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        _recipe(registry, tmp_path, 'arch = "resnet81"')
    assert (
        "unknown torchvision classification architecture 'resnet81' — did you mean 'resnet18'?" in info.value.render()
    )
    with pytest.raises(UsageError) as info:  # detection models are not classifiers
        _recipe(registry, tmp_path, 'arch = "fasterrcnn_resnet50_fpn"')
    assert "unknown torchvision classification architecture 'fasterrcnn_resnet50_fpn'" in info.value.render()


def test_missing_pretrained_weights_name_the_file_to_put_in_the_cache(registry, tmp_path: Path, hub: Path) -> None:
    with pytest.raises(UsageError) as info:
        _recipe(registry, tmp_path, 'arch = "resnet18"\npretrained = true')
    text = info.value.render()
    assert str(hub / "checkpoints" / "resnet18-f37072fd.pth") in text
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in text and "never downloads" in text
    with pytest.raises(ValueError, match="resnet18-f37072fd.pth"):  # the factory refuses too, never downloads
        vision_models.torchvision_model("resnet18", pretrained=True)


@pytest.mark.parametrize(
    ("arch", "replaced"),
    [("squeezenet1_1", {"features.0.weight", "classifier.1.weight", "classifier.1.bias"}),
     ("shufflenet_v2_x0_5", {"conv1.0.weight", "fc.weight", "fc.bias"})],
)  # fmt: skip
def test_cached_pretrained_weights_load_with_a_new_head_and_summed_grayscale_filters(
    arch: str, replaced: set[str], hub: Path
) -> None:
    torch.manual_seed(0)
    original = torchvision.models.get_model(arch, num_classes=1000)
    path, _ = vision_models.weights_path(arch)
    path.parent.mkdir(parents=True)
    torch.save(original.state_dict(), path)
    model = vision_models.torchvision_model(arch, num_classes=7, in_channels=1, pretrained=True)
    state, before = model.state_dict(), original.state_dict()
    assert state.keys() == before.keys()
    # Everything but the first convolution and the head is the pretrained network.
    assert {
        key for key in state if state[key].shape != before[key].shape or not torch.equal(state[key], before[key])
    } == replaced
    first = "features.0.weight" if arch == "squeezenet1_1" else "conv1.0.weight"
    assert torch.equal(state[first], before[first].sum(dim=1, keepdim=True))
    assert model.eval()(torch.rand(2, 1, 64, 64)).shape == (2, 7)


def test_a_channel_mismatch_is_caught_before_training_with_the_fix(registry, tmp_path: Path) -> None:
    recipe = _recipe(registry, tmp_path, 'arch = "squeezenet1_1"\nnum_classes = 4')
    with pytest.raises(UsageError) as info:
        engine.run(recipe, **QUIET)
    text = info.value.render()
    assert "model 'torchvision' expects 3-channel images but dataset 'synthetic' gives 1-channel ones" in text
    assert 'name = "grayscale", num_output_channels = 3' in text
    assert not Path("runs").exists()
    rgb = _recipe(registry, tmp_path, 'arch = "squeezenet1_1"\nin_channels = 1\nnum_classes = 4',
                  '[[transforms]]\nname = "grayscale"\nnum_output_channels = 3')  # fmt: skip
    with pytest.raises(UsageError) as info:
        engine.run(rgb, **QUIET)
    assert "expects 1-channel images but dataset 'synthetic' gives 3-channel" in str(info.value)
    assert "or set model.in_channels = 3" in info.value.render()


@pytest.mark.slow
def test_a_torchvision_architecture_trains_through_the_engine(registry, tmp_path: Path) -> None:
    recipe = _recipe(registry, tmp_path, 'arch = "squeezenet1_1"\nnum_classes = 4',
                     '[[transforms]]\nname = "grayscale"\nnum_output_channels = 3')  # fmt: skip
    lines: list[str] = []
    result = engine.run(recipe, echo=lines.append, progress=False)
    assert any(line.startswith("data path: memory") for line in lines)  # grayscale has a batch version
    assert result.metrics and result.final_accuracy == result.final_accuracy  # trained and tested, not nan
    state = torch.load(result.folder.path / "model.pt", weights_only=True)
    assert state["classifier.1.weight"].shape[0] == 4 and state["features.0.weight"].shape[1] == 3
