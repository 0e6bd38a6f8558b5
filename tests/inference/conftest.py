"""A tiny but real model package (a torch Linear state dict with its true sha256) for the package tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from inference.catalog import ModelVersion
from tests.inference.tiny_model import WEIGHTS, tiny_manifest


def example_manifest(weights_sha256: str = "0" * 64) -> dict[str, Any]:
    """The tiny test package's manifest, dressed as a full-size frontal chest X-ray model."""
    return tiny_manifest(
        weights_sha256,
        training_data="NIH ChestX-ray14 subset (521 images); no age or sex metadata.",
        performance_claims=[
            {"label": "Effusion", "metric": "AUROC", "value": 0.86, "dataset": "ChestX-ray14 test split"}
        ],
        selectors=[
            {"keyword": "Modality", "values": ["CR", "DX"]},
            {"keyword": "BodyPartExamined", "values": ["CHEST"]},
            {"keyword": "ViewPosition", "values": ["PA", "AP"]},
            {
                "keyword": "SOPClassUID",
                "values": ["1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1"],
            },
        ],
        preprocessing={
            "input_size": 224,
            "channels": 3,
            "resize": "resize_short_crop_center",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        runtime={"kind": "state_dict", "weights": WEIGHTS, "module": "tests.models:Tiny", "kwargs": {}},
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_package(folder: Path, **changes: Any) -> Path:
    """A package folder with a real Linear(4, 2) state dict; ``changes`` replace top-level manifest keys."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(4, 2).state_dict(), folder / WEIGHTS)
    manifest = example_manifest(sha256_of(folder / WEIGHTS)) | changes
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.fixture
def make_package(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "package", **changes: Any) -> Path:
        return write_package(tmp_path / name, **changes)

    return make


@pytest.fixture
def manifest_data() -> dict[str, Any]:
    return example_manifest()


def add_version(db: Session, model_id: str = "m", device_uid: str = "1.2.3") -> int:
    """A catalog row for jobs to point at, without a package behind it; returns its id."""
    version = ModelVersion(
        model_id=model_id,
        version="1.0.0",
        name=model_id,
        vendor="v",
        device_uid=device_uid,
        weights_sha256="0" * 64,
        manifest_json="{}",
        package_path="/nowhere",
        mode="shadow",
        installed_by="test",
    )
    db.add(version)
    db.flush()
    return version.id
