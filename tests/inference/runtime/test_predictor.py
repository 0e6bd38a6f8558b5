"""Per finding: probability, the decision at the package's threshold, a heatmap and boxes where the model
looked (positive findings only); per study: the triage priority the package's rules give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.manifest import Manifest, Priority
from inference.runtime.predictor import FindingPrediction, Predictor, triage_priority
from tests.inference.conftest import example_manifest


class BrightSpotModel(torch.nn.Module):
    """Output 0 (Effusion) falls with brightness; output 1 (Pneumothorax) rises with it; CAM shows where."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Conv2d(3, 1, kernel_size=1, bias=False)
        self.classifier = torch.nn.Linear(1, 2)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
            self.classifier.weight.copy_(torch.tensor([[-5.0], [5.0]]))
            self.classifier.bias.copy_(torch.tensor([0.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.features(x)).mean(dim=(2, 3)))


@pytest.fixture
def manifest() -> Manifest:
    data = example_manifest("a" * 64)
    data["preprocessing"]["input_size"] = 32
    return Manifest.model_validate(data)


def _image_with_spot() -> torch.Tensor:
    image = torch.full((3, 32, 32), -2.0)
    image[:, 4:12, 20:28] = 2.0  # a bright 8x8 spot, top right
    return image


def test_probabilities_decisions_heatmap_and_boxes(manifest: Manifest) -> None:
    predictor = Predictor(manifest, BrightSpotModel().eval(), torch.device("cpu"), "fp32")
    [prediction] = predictor.predict([_image_with_spot()])
    effusion, pneumothorax = prediction.findings

    logit = 5 * 2.0 * 64 / 1024 - 1  # spot mean of the relu'd features
    assert pneumothorax.probability == pytest.approx(torch.sigmoid(torch.tensor(logit)).item(), abs=1e-6)
    assert pneumothorax.positive and not effusion.positive
    assert effusion.heatmap is None and effusion.boxes == []  # no map painted on a negative finding

    assert pneumothorax.heatmap is not None
    assert pneumothorax.heatmap.shape == (32, 32)
    peak_row, peak_col = np.unravel_index(pneumothorax.heatmap.argmax(), (32, 32))
    assert 4 <= peak_row < 12 and 20 <= peak_col < 28
    [(x0, y0, x1, y1)] = pneumothorax.boxes
    assert 17 <= x0 <= 21 and 27 <= x1 <= 31 and 1 <= y0 <= 5 and 11 <= y1 <= 15
    assert prediction.triage is Priority.URGENT  # Pneumothorax positive: the package's urgent rule


def test_a_batch_gives_the_same_answers_as_one_by_one(manifest: Manifest) -> None:
    predictor = Predictor(manifest, BrightSpotModel().eval(), torch.device("cpu"), "fp32")
    images = [_image_with_spot(), torch.full((3, 32, 32), -2.0)]
    batched = predictor.predict(images)
    single = [predictor.predict([image])[0] for image in images]
    for one, other in zip(batched, single, strict=True):
        assert [f.probability for f in one.findings] == pytest.approx([f.probability for f in other.findings])
    assert batched[1].triage is Priority.ROUTINE  # a dark image: nothing positive, so no rule raised it


def test_a_triage_rule_with_its_own_bar_overrides_the_threshold(manifest: Manifest) -> None:
    data = manifest.model_dump(mode="json")
    data["triage"] = [
        {"label": "Pneumothorax", "priority": "urgent", "min_probability": 0.9},
        {"label": "Effusion", "priority": "priority"},
    ]
    strict = Manifest.model_validate(data)
    findings = [
        FindingPrediction("Effusion", 0.5, 0.4, True, None, []),
        FindingPrediction("Pneumothorax", 0.6, 0.3, True, None, []),
    ]
    assert triage_priority(strict, findings) is Priority.PRIORITY
    findings[1] = FindingPrediction("Pneumothorax", 0.95, 0.3, True, None, [])
    assert triage_priority(strict, findings) is Priority.URGENT


def test_routine_when_rules_raise_nothing_and_no_level_without_rules(manifest: Manifest) -> None:
    quiet = [
        FindingPrediction("Effusion", 0.1, 0.4, False, None, []),
        FindingPrediction("Pneumothorax", 0.1, 0.3, False, None, []),
    ]
    assert triage_priority(manifest, quiet) is Priority.ROUTINE  # the model looked: the worklist says so
    without_rules = Manifest.model_validate({**manifest.model_dump(mode="json"), "triage": []})
    assert triage_priority(without_rules, quiet) is None  # a model that does not triage says nothing


def test_bf16_autocast_stays_close_to_fp32(manifest: Manifest) -> None:
    model = BrightSpotModel().eval()
    exact = Predictor(manifest, model, torch.device("cpu"), "fp32").predict([_image_with_spot()])[0]
    fast = Predictor(manifest, model, torch.device("cpu"), "bf16").predict([_image_with_spot()])[0]
    for one, other in zip(exact.findings, fast.findings, strict=True):
        assert one.probability == pytest.approx(other.probability, abs=2e-2)
