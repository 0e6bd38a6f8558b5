"""A tiny model module and loadable packages for it, for tests that install packages into the catalog.

``Tiny`` keeps the runtime contract (a (B, C, S, S) batch in, (B, N) logits out) at a size that builds in
milliseconds. Tests allow this module with ``allowed_modules=(MODULE,)`` / ``Settings.model_modules``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

MODULE = __name__
WEIGHTS = "weights.pt"


class Tiny(nn.Module):
    """Global average pooling then one linear layer: the smallest network with class activation maps."""

    def __init__(self, channels: int = 1, outputs: int = 2) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.classifier = nn.Linear(channels, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def tiny_manifest(weights_sha256: str, **changes: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "id": "openaim.tiny-cxr",
        "name": "Tiny chest X-ray classifier",
        "vendor": "openaim tests",
        "version": "1.0.0",
        "intended_use": "Triage of frontal adult chest radiographs for effusion and pneumothorax.",
        "contraindications": ["Paediatric patients", "Lateral views"],
        "regulatory": {"status": "research_use_only", "statement": "For research use only."},
        "training_data": "Random weights; trained on nothing.",
        "performance_claims": [
            {"label": "Effusion", "metric": "AUROC", "value": 0.5, "dataset": "none (random weights)"}
        ],
        "outputs": [
            {
                "label": "Effusion",
                "display_name": "Pleural effusion",
                "threshold": 0.4,
                "code": {"value": "60046008", "scheme": "SCT", "meaning": "Pleural effusion"},
            },
            {"label": "Pneumothorax", "display_name": "Pneumothorax", "threshold": 0.3},
        ],
        "triage": [{"label": "Pneumothorax", "priority": "urgent"}],
        "selectors": [
            {"keyword": "Modality", "values": ["CR", "DX"]},
            {"keyword": "BodyPartExamined", "values": ["CHEST"]},
        ],
        "preprocessing": {
            "input_size": 16,
            "channels": 1,
            "resize": "stretch",
            "mean": [0.5],
            "std": [0.25],
        },
        "runtime": {"kind": "state_dict", "weights": WEIGHTS, "module": f"{MODULE}:Tiny", "kwargs": {}},
        "weights_sha256": weights_sha256,
        "device_uid": "1.2.826.0.1.3680043.10.1234.1.0",
    }
    return manifest | changes


def write_tiny_package(folder: Path, seed: int = 0, **changes: Any) -> Path:
    """A loadable package folder; ``changes`` replace top-level manifest keys (version, device_uid...)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(Tiny().state_dict(), folder / WEIGHTS)
    digest = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(tiny_manifest(digest, **changes), indent=2))
    return folder
