"""DenseNet121: torchvision's state-dict layout, logits out, and the feature map the CAM is computed from."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from inference.models.densenet import DenseNet121

from .conftest import random_densenet

SMALL = 64  # every test but the layout ones runs at 64x64: 1/12 of the work of 224x224


@pytest.fixture(scope="module")
def model() -> DenseNet121:
    return random_densenet(seed=1)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.randn(2, 3, SMALL, SMALL)


def test_parameter_count_is_torchvisions_densenet121() -> None:
    # torchvision documents densenet121 (1000 ImageNet classes) as 7,978,856 parameters
    model = DenseNet121(num_classes=1000)
    assert sum(parameter.numel() for parameter in model.parameters()) == 7_978_856


def test_state_dict_names_and_shapes_are_torchvisions() -> None:
    state = DenseNet121(num_classes=14).state_dict()
    assert len(state) == 727
    expected = {
        "features.conv0.weight": (64, 3, 7, 7),
        "features.norm0.running_var": (64,),
        "features.denseblock1.denselayer1.norm1.weight": (64,),
        "features.denseblock1.denselayer1.conv1.weight": (128, 64, 1, 1),
        "features.denseblock1.denselayer1.norm2.weight": (128,),
        "features.denseblock1.denselayer1.conv2.weight": (32, 128, 3, 3),
        "features.denseblock1.denselayer6.conv1.weight": (128, 64 + 5 * 32, 1, 1),
        "features.transition1.norm.weight": (256,),
        "features.transition1.conv.weight": (128, 256, 1, 1),
        "features.denseblock2.denselayer12.conv1.weight": (128, 128 + 11 * 32, 1, 1),
        "features.transition2.conv.weight": (256, 512, 1, 1),
        "features.denseblock3.denselayer24.conv1.weight": (128, 256 + 23 * 32, 1, 1),
        "features.transition3.conv.weight": (512, 1024, 1, 1),
        "features.denseblock4.denselayer16.conv2.weight": (32, 128, 3, 3),
        "features.norm5.weight": (1024,),
        "features.norm5.num_batches_tracked": (),
        "classifier.weight": (14, 1024),
        "classifier.bias": (14,),
    }
    assert {name: tuple(state[name].shape) for name in expected} == expected
    layers = {name.split(".")[2] for name in state if ".denseblock4." in name}
    assert len(layers) == 16
    assert not [name for name in state if "denselayer25" in name or "transition4" in name]


def test_forward_returns_logits_of_the_pooled_relu_feature_map(
    model: DenseNet121, batch: torch.Tensor
) -> None:
    with torch.inference_mode():
        logits = model(batch)
        feature_map = model.features(batch)
        by_hand = model.classifier(torch.relu(feature_map).mean(dim=(2, 3)))
    assert logits.shape == (2, 14)
    assert feature_map.shape == (2, 1024, SMALL // 32, SMALL // 32)
    assert feature_map.min() < 0  # ``features`` stops before the final ReLU, as torchvision's does
    torch.testing.assert_close(logits, by_hand)
    assert (logits < 0).any()  # logits, not probabilities


def test_class_activation_maps_average_to_the_logits(model: DenseNet121, batch: torch.Tensor) -> None:
    # The runtime's CAM: classifier.weight @ relu(features(x)); its spatial mean plus the bias is the logit.
    with torch.inference_mode():
        cams = torch.einsum("kc,bchw->bkhw", model.classifier.weight, torch.relu(model.features(batch)))
        logits = model(batch)
    torch.testing.assert_close(cams.mean(dim=(2, 3)) + model.classifier.bias, logits, rtol=1e-4, atol=1e-4)


def test_each_image_of_a_batch_is_predicted_as_if_alone(model: DenseNet121, batch: torch.Tensor) -> None:
    with torch.inference_mode():
        together = model(batch)
        alone = torch.cat([model(batch[index : index + 1]) for index in range(len(batch))])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_channels_last_gives_the_same_logits(model: DenseNet121, batch: torch.Tensor) -> None:
    fast = random_densenet(seed=1).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = model(batch)
        actual = fast(batch.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_bfloat16_autocast_stays_close_to_float32(model: DenseNet121, batch: torch.Tensor) -> None:
    with torch.inference_mode():
        expected = model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            actual = model(batch)
    assert actual.dtype == torch.bfloat16  # autocast really ran the layers in bfloat16
    error = (actual.float() - expected).abs().max()
    assert error < 0.05 * expected.abs().max(), f"bfloat16 drifted by {error}"


def test_number_of_outputs_follows_num_classes() -> None:
    model = DenseNet121(num_classes=3).eval()
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 3
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
