"""A loaded model package that turns batches of model inputs into findings: probability, the decision at the
package's threshold, a heatmap and boxes for positive findings, and the study's triage priority.

Heatmaps are made only for positive findings: a map is normalised to its own peak, so on a negative finding
it would paint a confident-looking region where the model found nothing.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from inference.manifest import Manifest, Priority
from inference.package import ModelPackage
from inference.runtime.cam import boxes_from_map, logits_and_cams, normalised_map, supports_cam
from inference.runtime.loader import DEFAULT_ALLOWED_MODULES, load_model

PRIORITY_ORDER = (Priority.URGENT, Priority.PRIORITY, Priority.ROUTINE)


@dataclass(frozen=True)
class FindingPrediction:
    label: str
    probability: float
    threshold: float
    positive: bool
    heatmap: np.ndarray | None  # (S, S) float32 0..1 over the model input; None when negative or no CAM
    boxes: list[tuple[int, int, int, int]]  # (x0, y0, x1, y1) in model-input pixels


@dataclass(frozen=True)
class Prediction:
    findings: list[FindingPrediction]
    triage: Priority | None


def pick_device(setting: str = "auto") -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


class Predictor:
    """One model version, loaded once, on one device; ``predict`` takes any number of inputs at a time."""

    def __init__(
        self, manifest: Manifest, model: torch.nn.Module, device: torch.device, precision: str
    ) -> None:
        self.manifest = manifest
        self.device = device
        self.bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
        self.model = model.to(device)
        if self.bf16:
            # what bf16 kernels are fast on (torch's stubs do not list memory_format for Module.to)
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.cam = supports_cam(model)

    @classmethod
    def load(
        cls,
        package: ModelPackage,
        device: str = "auto",
        precision: str = "auto",
        allowed_modules: tuple[str, ...] = DEFAULT_ALLOWED_MODULES,
    ) -> Predictor:
        return cls(package.manifest, load_model(package, allowed_modules), pick_device(device), precision)

    def _autocast(self) -> AbstractContextManager[object]:
        if not self.bf16:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and (when the module allows it) raw class activation maps for a (B, C, S, S) batch."""
        batch = batch.to(self.device, non_blocking=True)
        if self.bf16:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            if self.cam:
                return logits_and_cams(self.model, batch)
            return self.model(batch), None

    def predict(self, inputs: list[torch.Tensor]) -> list[Prediction]:
        logits, cams = self.forward(torch.stack(inputs))
        probabilities = torch.sigmoid(logits.float()).cpu().numpy()
        return [
            self._prediction(probabilities[index], None if cams is None else cams[index])
            for index in range(len(inputs))
        ]

    def _prediction(self, probabilities: np.ndarray, cams: torch.Tensor | None) -> Prediction:
        size = self.manifest.preprocessing.input_size
        findings = []
        for index, output in enumerate(self.manifest.outputs):
            probability = float(probabilities[index])
            positive = probability >= output.threshold
            heatmap = normalised_map(cams[index], size) if positive and cams is not None else None
            boxes = boxes_from_map(heatmap) if heatmap is not None else []
            findings.append(
                FindingPrediction(output.label, probability, output.threshold, positive, heatmap, boxes)
            )
        return Prediction(findings, triage_priority(self.manifest, findings))


def triage_priority(manifest: Manifest, findings: list[FindingPrediction]) -> Priority | None:
    """The highest priority any triage rule raises; a rule without its own bar uses the output's threshold.

    A model with triage rules that raised none says routine: it looked and found nothing to hurry for, which
    a reader must tell from a study no model has triaged (None: no rules, or no result yet).
    """
    by_label = {finding.label: finding for finding in findings}
    raised = {
        rule.priority
        for rule in manifest.triage
        if rule.label in by_label
        and by_label[rule.label].probability >= (rule.min_probability or by_label[rule.label].threshold)
    }
    if not manifest.triage:
        return None
    return next((priority for priority in PRIORITY_ORDER if priority in raised), Priority.ROUTINE)
