"""The demo network keeps the shape the platform's class activation maps rely on."""

from __future__ import annotations

import torch

from inference.models.demo_cxr import DemoCXRNet
from inference.runtime.cam import logits_and_cams, supports_cam


def test_it_returns_one_logit_per_output_for_each_image() -> None:
    model = DemoCXRNet(n_outputs=3, in_channels=1, width=8).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, 1, 64, 64))
    assert logits.shape == (2, 3)


def test_forward_is_the_classifier_on_pooled_rectified_features() -> None:
    torch.manual_seed(0)
    model = DemoCXRNet(n_outputs=2, width=8).eval()
    batch = torch.randn(2, 1, 96, 96)
    with torch.inference_mode():
        features = model.features(batch)
        expected = model.classifier(torch.relu(features).mean(dim=(2, 3)))
        assert features.shape == (2, 64, 12, 12)  # 8 * width channels at 1/8 of the input
        assert (features < 0).any()  # the map is exposed before its ReLU, as CAM expects
        assert torch.allclose(model(batch), expected, atol=1e-6)


def test_the_platform_can_draw_its_class_activation_maps() -> None:
    model = DemoCXRNet(n_outputs=2, width=8).eval()
    batch = torch.randn(1, 1, 64, 64)
    assert supports_cam(model)
    with torch.inference_mode():
        logits, cams = logits_and_cams(model, batch)
        assert torch.allclose(logits, model(batch), atol=1e-6)
    assert cams.shape == (1, 2, 8, 8)


def test_at_the_demo_input_size_its_map_is_at_least_16_by_16() -> None:
    # A 4x4 map (the last stage alone, at 1/32) washes half a chest; 16x16 can point at a region.
    model = DemoCXRNet(n_outputs=1).eval()
    with torch.inference_mode():
        _, cams = logits_and_cams(model, torch.randn(1, 1, 128, 128))
    assert cams.shape[-2:] == (16, 16)
