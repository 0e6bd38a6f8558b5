"""The shared ChestX-ray14 images for the demo model: loaded once through the platform's own transform,
and split by patient (fixed and seeded) into the images it trains on and the ones it is measured on."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from inference.manifest import Preprocessing
from inference.models.chexnet import LABELS  # CheXNet's order: the column order of labels.csv
from inference.runtime.transform import to_model_input


@dataclass(frozen=True)
class Dataset:
    names: list[str]
    images: torch.Tensor  # (N, 1, S, S) model inputs, computed once
    labels: np.ndarray  # (N, 14) true NIH labels, 0/1
    reference: np.ndarray  # (N, 14) the published CheXNet's probabilities


def load_dataset(data_dir: Path, preprocessing: Preprocessing, limit: int | None = None) -> Dataset:
    """labels.csv and its PNGs, each image turned into the model input by the platform's own transform."""
    with (data_dir / "labels.csv").open(newline="") as stream:
        rows = sorted(csv.DictReader(stream), key=lambda row: row["image"])
    rows = rows[:limit] if limit else rows
    images = []
    for row in rows:
        with Image.open(data_dir / row["resolution"] / row["image"]) as picture:
            grey = np.asarray(picture.convert("L"))  # one source PNG is RGBA
        images.append(to_model_input(grey, preprocessing)[0])
    return Dataset(
        names=[row["image"] for row in rows],
        images=torch.stack(images),
        labels=np.array([[int(row[label]) for label in LABELS] for row in rows], dtype=np.float32),
        reference=np.array([[float(row[f"ref_prob_{label}"]) for label in LABELS] for row in rows]),
    )


def patient_of(image_name: str) -> str:
    """NIH file names are <8-digit patient id>_<3-digit follow-up>.png."""
    return image_name[:8]


def split_by_patient(
    names: Sequence[str], labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices; all images of a patient fall on one side.

    Patients are stratified by their rarest positive finding (or none), so each finding's few positives
    divide roughly in proportion instead of by luck; within a stratum a seeded shuffle decides.
    """
    prevalence = labels.sum(axis=0)
    patients: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        patients.setdefault(patient_of(name), []).append(index)
    strata: dict[int, list[str]] = {}
    for patient, indices in sorted(patients.items()):
        positive = labels[indices].max(axis=0) > 0
        stratum = int(np.argmin(np.where(positive, prevalence, np.inf))) if positive.any() else -1
        strata.setdefault(stratum, []).append(patient)
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for _, members in sorted(strata.items()):
        chosen = rng.permutation(len(members))[: round(test_fraction * len(members))]
        test += [index for choice in chosen for index in patients[members[choice]]]
    test_indices = np.array(sorted(test), dtype=np.int64)
    train_indices = np.setdiff1d(np.arange(len(names)), test_indices)
    return train_indices, test_indices


def split_summary(names: list[str], train_rows: np.ndarray, test_rows: np.ndarray) -> dict[str, Any]:
    # The held-out file names are summarised by a hash: enough to check the split, no list of cases.
    return {
        "by": "patient (first 8 digits of the NIH file name), stratified by rarest positive finding",
        "total_images": len(names),
        "train_images": len(train_rows),
        "train_patients": len({patient_of(names[i]) for i in train_rows}),
        "test_images": len(test_rows),
        "test_patients": len({patient_of(names[i]) for i in test_rows}),
        "test_set_sha256": hashlib.sha256("\n".join(names[i] for i in test_rows).encode()).hexdigest(),
    }
