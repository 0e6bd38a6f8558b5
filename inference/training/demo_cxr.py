"""Train the platform's demonstration chest X-ray model on the shared ChestX-ray14 images; write its package.

    python -m inference.training.demo_cxr --out inference/packages/openaim-demo-cxr

The demo needs a model whose every number can be reproduced here: 521 images, two CPU cores, minutes.
So the network is small (``inference.models.demo_cxr``), the split is by patient and fixed, every random
draw comes from one seed, and torch runs with deterministic algorithms on a fixed number of threads.

Pixels go through ``inference.runtime.transform.to_model_input`` with the manifest's own preprocessing, so
the model is trained on exactly the numbers the platform will give it at inference time.

521 images are far too few to learn fourteen findings from hard labels alone, so besides the true NIH labels
the network learns the published CheXNet's outputs on the same training images (``ref_prob_*`` in
labels.csv): knowledge distillation. The test split's labels and CheXNet outputs are used only to measure.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.optimize import minimize
from scipy.special import expit, logit
from torch.nn import functional

from inference.manifest import MANIFEST_NAME, Manifest, Preprocessing, ResizeMode
from inference.models.chexnet import LABELS  # CheXNet's order: the column order of labels.csv
from inference.models.demo_cxr import DemoCXRNet
from inference.runtime.transform import to_model_input
from openaim.settings import Settings

MODULE = "inference.models.demo_cxr:DemoCXRNet"
WEIGHTS_NAME = "weights.pt"
METRICS_NAME = "metrics.json"
CARD_NAME = "MODEL_CARD.md"
THRESHOLD_FOLDS = 3  # out-of-fold scores for choosing thresholds (see out_of_fold)
THREADS = 2  # fixed: the number of threads changes how sums are split, hence the last bits of every weight
Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the weights; written into metrics.json and the model card."""

    # Shipped: the findings with a cross-validated AUROC of at least 0.70 inside the training split and at
    # least 25 positives there (Edema and Hernia scored well on 13 positives each: too few to trust).
    outputs: tuple[str, ...] = ("Cardiomegaly", "Effusion", "Mass", "Emphysema")
    input_size: int = 128  # 160 was no better in cross-validation, and 1.6 times slower
    width: int = 32
    epochs: int = 120  # 40 -> 80 -> 120 epochs kept improving cross-validated AUROC
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 5e-4
    # Distillation: logit matching did better in cross-validation than soft targets (distill > 0) and as
    # well as both together, so the cross-entropy keeps the true labels and the teacher speaks in log-odds.
    distill: float = 0.0  # weight of CheXNet's probability in each soft target; the true label gets the rest
    logit_match: float = 1.0  # weight of a smooth-L1 loss pulling the logits towards CheXNet's log-odds
    ema_decay: float = 0.99
    test_fraction: float = 0.25
    seed: int = 20240611
    limit: int | None = None  # use only the first N images (smoke tests)

    def preprocessing(self) -> Preprocessing:
        # One grey channel: the source PNGs are grey, and three copies of it would triple the first layer
        # for nothing. Mean and std are round numbers near the data's own; batch norm takes the rest.
        return Preprocessing(
            input_size=self.input_size,
            channels=1,
            resize=ResizeMode.RESIZE_SHORT_CROP_CENTER,
            mean=[0.5],
            std=[0.25],
        )


@dataclass(frozen=True)
class Dataset:
    names: list[str]
    images: torch.Tensor  # (N, 1, S, S) model inputs, computed once
    labels: np.ndarray  # (N, 14) true NIH labels, 0/1
    reference: np.ndarray  # (N, 14) the published CheXNet's probabilities


# -- data ------------------------------------------------------------------------------------------------


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


# -- training ----------------------------------------------------------------------------------------------


def make_deterministic(seed: int) -> None:
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random rotation, zoom, shift and contrast/brightness: what differs between two chest films.

    No horizontal flip: the heart is on the left, and cardiomegaly is about where it is.
    """
    n = batch.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = torch.deg2rad(uniform(-10.0, 10.0))
    scale = uniform(0.87, 1.13)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, uniform(-0.08, 0.08)], dim=1),
            torch.stack([sin, cos, uniform(-0.08, 0.08)], dim=1),
        ],
        dim=1,
    )
    grid = functional.affine_grid(theta, list(batch.shape), align_corners=False)
    moved = functional.grid_sample(batch, grid, padding_mode="border", align_corners=False)
    contrast = uniform(0.8, 1.2)[:, None, None, None]
    brightness = uniform(-0.3, 0.3)[:, None, None, None]
    return moved * contrast + brightness


def soft_targets(labels: np.ndarray, reference: np.ndarray, distill: float) -> torch.Tensor:
    return torch.from_numpy((1.0 - distill) * labels + distill * reference).float()


def train(
    images: torch.Tensor, labels: np.ndarray, reference: np.ndarray, recipe: Recipe, log: Log
) -> torch.nn.Module:
    """A DemoCXRNet with one output per NIH label, trained on the true labels and CheXNet's outputs (as
    the recipe weighs them); returns the exponential moving average of its weights.

    All fourteen labels are learnt, although fewer are shipped: the others are extra signal for the shared
    features (CheXNet's outputs exist for every label), and shipping is slicing the classifier's rows.
    """
    targets = soft_targets(labels, reference, recipe.distill)
    reference_logits = torch.logit(torch.from_numpy(reference).float().clamp(1e-4, 1 - 1e-4))
    generator = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    model = DemoCXRNet(n_outputs=len(LABELS), in_channels=images.shape[1], width=recipe.width)
    average = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True
    )
    batch_size = min(recipe.batch_size, len(images))
    steps_per_epoch = len(images) // batch_size  # full batches only: batch norm needs more than one image
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch, pct_start=0.15
    )
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * batch_size : (step + 1) * batch_size]
            logits = model(augment(images[batch], generator))
            loss = functional.binary_cross_entropy_with_logits(logits, targets[batch])
            if recipe.logit_match:
                loss = loss + recipe.logit_match * functional.smooth_l1_loss(logits, reference_logits[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            average.update_parameters(model)
            total += float(loss.detach())
        if epoch % 10 == 9 or epoch == recipe.epochs - 1:
            log(f"epoch {epoch + 1}/{recipe.epochs}: loss {total / steps_per_epoch:.4f}")
    return average.module


def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Probabilities (sigmoid of the logits), in eval mode."""
    model.eval()
    with torch.inference_mode():
        logits = [model(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
    return torch.sigmoid(torch.cat(logits)).numpy().astype(np.float64)


def shipped_model(
    model: torch.nn.Module, recipe: Recipe, calibration: Sequence[tuple[float, float]] | None = None
) -> DemoCXRNet:
    """The trained network keeping only the classifier rows of the shipped outputs, in their order, with
    each output's Platt (scale, offset) folded into its row: logits stay logits, CAM maps keep their shape."""
    rows = [LABELS.index(label) for label in recipe.outputs]
    scale, offset = (
        torch.tensor(values, dtype=torch.float32)
        for values in zip(*(calibration or [(1.0, 0.0)] * len(rows)), strict=True)
    )
    state = {name: value.clone() for name, value in model.state_dict().items() if name != "n_averaged"}
    state["classifier.weight"] = (scale[:, None] * state["classifier.weight"][rows]).contiguous()
    state["classifier.bias"] = (scale * state["classifier.bias"][rows] + offset).contiguous()
    shipped = DemoCXRNet(n_outputs=len(rows), in_channels=1, width=recipe.width)
    shipped.load_state_dict(state, strict=True)
    return shipped.eval()


# -- metrics ---------------------------------------------------------------------------------------------


def _comparisons(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    # (positives x negatives): 1 where the positive scores higher, 0.5 for a tie
    positive, negative = scores[truth > 0], scores[truth <= 0]
    return (positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :])


def auroc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """The probability that a random positive outscores a random negative (Mann-Whitney); None if
    either class is missing."""
    if truth.min() == truth.max():
        return None
    return float(_comparisons(scores, truth).mean())


def delong_interval(scores: np.ndarray, truth: np.ndarray, z: float = 1.959964) -> tuple[float, float] | None:
    """A 95% interval for the AUROC from DeLong's variance (DeLong et al., Biometrics 1988), clipped to
    0..1. Closed form, so it needs no resampling seed and costs nothing."""
    if truth.min() == truth.max():
        return None
    pairs = _comparisons(scores, truth)
    area = pairs.mean()
    n_positive, n_negative = pairs.shape
    variance = (pairs.mean(axis=1).var(ddof=1) if n_positive > 1 else 0.0) / n_positive + (
        pairs.mean(axis=0).var(ddof=1) if n_negative > 1 else 0.0
    ) / n_negative
    half = z * float(np.sqrt(variance))
    return max(0.0, area - half), min(1.0, area + half)


def platt_scaling(probabilities: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(scale, offset) so that sigmoid(scale * logit + offset) fits the truth (Platt 1999, maximum
    likelihood). (1, 0), no change, when it cannot be fitted or would reverse the ranking."""
    if truth.min() == truth.max():
        return 1.0, 0.0
    z = logit(np.clip(probabilities, 1e-6, 1 - 1e-6))

    def loss_and_gradient(parameters: np.ndarray) -> tuple[float, np.ndarray]:
        s = parameters[0] * z + parameters[1]
        error = expit(s) - truth
        return float(np.sum(np.logaddexp(0.0, s) - truth * s)), np.array([error @ z, error.sum()])

    fitted = minimize(loss_and_gradient, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    scale, offset = (float(value) for value in fitted.x)
    return (scale, offset) if fitted.success and scale > 0 else (1.0, 0.0)


def youden_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The probability cut maximising sensitivity + specificity - 1 (Youden's J), midway between two
    neighbouring scores so it does not sit on one image's value."""
    if truth.min() == truth.max():
        return 0.5
    candidates = np.unique(scores)
    cuts = np.concatenate([[candidates[0] / 2], (candidates[:-1] + candidates[1:]) / 2])
    positive = truth > 0
    sensitivity = (scores[positive][None, :] >= cuts[:, None]).mean(axis=1)
    specificity = (scores[~positive][None, :] < cuts[:, None]).mean(axis=1)
    best = float(cuts[int(np.argmax(sensitivity + specificity - 1.0))])
    return min(max(best, 1e-4), 1.0 - 1e-4)


# -- the package -----------------------------------------------------------------------------------------

PACKAGE_ID = "openaim.demo-cxr"
VERSION = "0.1.0"
DATA_ATTRIBUTION = (
    "NIH Clinical Center, ChestX-ray14; Wang X. et al., 'ChestX-ray8: Hospital-scale Chest X-ray Database "
    "and Benchmarks', CVPR 2017. Images and CheXNet reference outputs as redistributed by "
    "jrzech/reproduce-chexnet (Zech J.; BSD-3-Clause)."
)


@dataclass(frozen=True)
class Finding:
    """How one NIH label appears in the platform: its name for readers, its code, its triage rule."""

    display_name: str
    snomed: tuple[str, str] | None = None  # (code, meaning), only codes checked against SNOMED CT
    triage: str | None = None  # urgent / priority, for outputs that should reorder a worklist


FINDINGS = {
    "Atelectasis": Finding("Atelectasis"),
    "Cardiomegaly": Finding("Cardiomegaly", snomed=("8186001", "Cardiomegaly")),
    "Effusion": Finding("Pleural effusion", snomed=("60046008", "Pleural effusion"), triage="priority"),
    "Infiltration": Finding("Infiltration"),
    "Mass": Finding("Mass"),
    "Nodule": Finding("Nodule"),
    "Pneumonia": Finding("Pneumonia"),
    "Pneumothorax": Finding("Pneumothorax", snomed=("36118008", "Pneumothorax"), triage="urgent"),
    "Consolidation": Finding("Consolidation"),
    "Edema": Finding("Pulmonary oedema"),
    "Emphysema": Finding("Emphysema", snomed=("87433001", "Pulmonary emphysema")),
    "Fibrosis": Finding("Fibrosis"),
    "Pleural_Thickening": Finding("Pleural thickening"),
    "Hernia": Finding("Hernia"),
}


def device_uid(weights_sha256: str) -> str:
    """A DICOM UID under 2.25 (a UUID-derived root) taken from the weights: every retrain gets its own."""
    return "2.25." + str(int(weights_sha256[:32], 16))


def build_manifest(recipe: Recipe, metrics: dict[str, Any]) -> Manifest:
    """The manifest, validated by the platform's own rules before it is written."""
    split = metrics["split"]
    outputs, claims, triage = [], [], []
    for result in metrics["outputs"]:
        label, finding = result["label"], FINDINGS[result["label"]]
        output: dict[str, Any] = {
            "label": label,
            "display_name": finding.display_name,
            "threshold": result["threshold"],
        }
        if finding.snomed:
            value, meaning = finding.snomed
            output["code"] = {"value": value, "scheme": "SCT", "meaning": meaning}
        outputs.append(output)
        if finding.triage:
            triage.append({"label": label, "priority": finding.triage})
        if result["auroc"] is not None:
            low, high = result["auroc_ci95"]
            claims.append(
                {
                    "label": label,
                    "metric": "AUROC",
                    "value": result["auroc"],
                    "dataset": (
                        f"Held-out patient split of the shared NIH ChestX-ray14 images: "
                        f"n={split['test_images']}, {result['test_positives']} positive; "
                        f"95% CI {low:.2f}-{high:.2f} (DeLong)"
                    ),
                }
            )
    return Manifest.model_validate(
        {
            "id": PACKAGE_ID,
            "name": "openaim demonstration chest X-ray model",
            "vendor": "openaim (demonstration)",
            "version": VERSION,
            "intended_use": (
                "A DEMONSTRATION, NOT FOR CLINICAL USE. Shows how the openaim platform runs a model, draws "
                "its heatmaps, flags the worklist and collects reader feedback, on frontal adult chest "
                f"radiographs ({', '.join(FINDINGS[label].display_name for label in recipe.outputs)}). "
                f"It was trained on {split['train_images']} images and must not inform any patient's care."
            ),
            "contraindications": [
                "Any clinical use: it is a demonstration trained on a few hundred images.",
                "Lateral views, paediatric patients, CT or any non-chest image.",
                "Images with lines, tubes or devices it has never seen; post-operative chests.",
            ],
            "regulatory": {
                "status": "research_use_only",
                "statement": (
                    "For research and demonstration use only. Not a medical device; not cleared or "
                    "approved by any authority. Not for clinical use."
                ),
            },
            "training_data": (
                f"{split['train_images']} frontal chest radiographs ({split['train_patients']} patients) "
                f"of a {split['total_images']}-image subset of NIH ChestX-ray14, enriched for findings; "
                "8-bit PNG, labels text-mined from reports by NIH; no age, sex or scanner data. "
                "Trained on the true labels with knowledge distillation from the published CheXNet "
                "reproduction's outputs on the training images (see MODEL_CARD.md). " + DATA_ATTRIBUTION
            ),
            "performance_claims": claims,
            "outputs": outputs,
            "triage": triage,
            "selectors": [
                {"keyword": "Modality", "values": ["CR", "DX"]},
                {"keyword": "BodyPartExamined", "values": ["CHEST"]},
                {"keyword": "ViewPosition", "values": ["PA", "AP"]},
            ],
            "preprocessing": recipe.preprocessing().model_dump(mode="json"),
            "runtime": {
                "kind": "state_dict",
                "weights": WEIGHTS_NAME,
                "module": MODULE,
                "kwargs": {"n_outputs": len(recipe.outputs), "in_channels": 1, "width": recipe.width},
            },
            "weights_sha256": metrics["weights_sha256"],
            "device_uid": device_uid(metrics["weights_sha256"]),
        }
    )


def out_of_fold(
    images: torch.Tensor, labels: np.ndarray, reference: np.ndarray, recipe: Recipe, folds: int, log: Log
) -> np.ndarray:
    """Each training image scored by a model that did not train on it (k-fold inside the training split).

    Operating thresholds are chosen on these: the final model's scores on its own training images are
    optimistic (it has seen them), so thresholds taken there would be too high for new patients.
    """
    fold = np.random.default_rng(recipe.seed).permutation(len(images)) % folds
    scores = np.zeros(labels.shape)
    for k in range(folds):
        log(f"threshold fold {k + 1}/{folds}")
        inside, outside = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model = train(images[inside], labels[inside], reference[inside], recipe, log)
        scores[outside] = predict(model, images[outside])
    return scores


def evaluate(
    recipe: Recipe, test_scores: np.ndarray, test_data: tuple[np.ndarray, np.ndarray], thresholds: np.ndarray
) -> list[dict[str, Any]]:
    """Per shipped output: AUROC with its 95% interval, positives, the threshold and what it gives."""
    test_labels, test_reference = test_data
    results = []
    for index, label in enumerate(recipe.outputs):
        column = LABELS.index(label)
        truth, scores, threshold = test_labels[:, column], test_scores[:, index], float(thresholds[index])
        area, interval, teacher = (
            auroc(scores, truth),
            delong_interval(scores, truth),
            auroc(test_reference[:, column], truth),
        )
        called = scores >= threshold
        positives = int(truth.sum())
        results.append(
            {
                "label": label,
                "test_positives": positives,
                "test_negatives": int(len(truth) - positives),
                "auroc": None if area is None else round(area, 3),
                "auroc_ci95": None if interval is None else [round(value, 3) for value in interval],
                "chexnet_auroc_same_split": None if teacher is None else round(teacher, 3),
                "threshold": round(threshold, 4),
                "test_sensitivity_at_threshold": _rate(called[truth > 0]),
                "test_specificity_at_threshold": _rate(~called[truth <= 0]),
            }
        )
    return results


def _rate(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 3) if len(hits) else None


def operating_points(scores: np.ndarray, truth: np.ndarray) -> tuple[list[tuple[float, float]], np.ndarray]:
    """Per output, a Platt calibration and then the Youden threshold of the calibrated scores.

    Logit matching makes the network speak CheXNet's probabilities, which are low on the whole (they
    were calibrated on NIH's population, not this enriched set): thresholds near 0.01 would confuse a
    reader. Calibrated on the training split, a probability means something for images like these.
    """
    calibration = [platt_scaling(scores[:, i], truth[:, i]) for i in range(scores.shape[1])]
    thresholds = [
        youden_threshold(expit(a * logit(np.clip(scores[:, i], 1e-6, 1 - 1e-6)) + c), truth[:, i])
        for i, (a, c) in enumerate(calibration)
    ]
    return calibration, np.array(thresholds)


def run(recipe: Recipe, data_dir: Path, out: Path, threshold_folds: int, log: Log) -> dict[str, Any]:
    """Load, split, train, choose thresholds, evaluate, write the package; returns the metrics written."""
    started = time.perf_counter()
    make_deterministic(recipe.seed)
    data = load_dataset(data_dir, recipe.preprocessing(), recipe.limit)
    train_rows, test_rows = split_by_patient(data.names, data.labels, recipe.test_fraction, recipe.seed)
    log(f"{len(data.names)} images loaded: {len(train_rows)} to train, {len(test_rows)} held out")
    images, labels, reference = data.images[train_rows], data.labels[train_rows], data.reference[train_rows]
    columns = [LABELS.index(label) for label in recipe.outputs]

    cross_validated: dict[str, float | None] = {}
    if threshold_folds > 1:
        scores = out_of_fold(images, labels, reference, recipe, threshold_folds, log)
        cross_validated = {
            label: _rounded(auroc(scores[:, i], labels[:, i])) for i, label in enumerate(LABELS)
        }
    log("final model")
    trained = train(images, labels, reference, recipe, log)
    if threshold_folds <= 1:  # smoke runs: the final model's own training scores
        scores = predict(trained, images)
    calibration, thresholds = operating_points(scores[:, columns], labels[:, columns])
    model = shipped_model(trained, recipe, calibration)
    test_scores = predict(model, data.images[test_rows])

    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / WEIGHTS_NAME)
    weights = (out / WEIGHTS_NAME).read_bytes()
    metrics = {
        "package": {"id": PACKAGE_ID, "version": VERSION},
        "recipe": asdict(recipe),
        "split": _split_summary(data.names, train_rows, test_rows),
        "threshold_method": (
            f"Platt scaling, then Youden's J, on {threshold_folds}-fold out-of-fold scores inside the "
            "training split"
            if threshold_folds > 1
            else "Platt scaling, then Youden's J, on the final model's training-split scores (optimistic)"
        ),
        "calibration": {
            label: {"scale": round(a, 4), "offset": round(c, 4)}
            for label, (a, c) in zip(recipe.outputs, calibration, strict=True)
        },
        "outputs": evaluate(
            recipe, test_scores, (data.labels[test_rows], data.reference[test_rows]), thresholds
        ),
        "threshold_folds": threshold_folds,
        "training_split_cross_validated_auroc": cross_validated,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "weights_bytes": len(weights),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
        },
    }
    manifest = build_manifest(recipe, metrics)
    (out / MANIFEST_NAME).write_text(
        json.dumps(manifest.model_dump(mode="json", exclude_none=True), indent=2) + "\n"
    )
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
    (out / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n")
    (out / CARD_NAME).write_text(model_card(recipe, metrics, manifest))
    log(f"package written in {metrics['wall_seconds']:.0f} s")
    return metrics


def _split_summary(names: list[str], train_rows: np.ndarray, test_rows: np.ndarray) -> dict[str, Any]:
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


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def model_card(recipe: Recipe, metrics: dict[str, Any], manifest: Manifest) -> str:
    """MODEL_CARD.md, written from the same numbers as the manifest so the two cannot disagree."""
    split, environment = metrics["split"], metrics["environment"]
    rows = []
    for result in metrics["outputs"]:
        interval = result["auroc_ci95"]
        rows.append(
            f"| {FINDINGS[result['label']].display_name} | {_number(result['auroc'])} | "
            f"{'-' if interval is None else f'{interval[0]:.2f} to {interval[1]:.2f}'} | "
            f"{result['test_positives']} / {result['test_negatives']} | "
            f"{_number(result['chexnet_auroc_same_split'])} | {result['threshold']:.4f} | "
            f"{_number(result['test_sensitivity_at_threshold'])} / "
            f"{_number(result['test_specificity_at_threshold'])} |"
        )
    codes = ", ".join(
        f"{output.display_name} SNOMED CT {output.code.value} ({output.code.meaning})"
        for output in manifest.outputs
        if output.code
    )
    triage = ", ".join(f"{rule.label} raises a study to {rule.priority.value}" for rule in manifest.triage)
    return CARD_TEMPLATE.format(
        version=VERSION,
        outputs=", ".join(FINDINGS[label].display_name for label in recipe.outputs),
        attribution=DATA_ATTRIBUTION,
        total=split["total_images"],
        train=split["train_images"],
        train_patients=split["train_patients"],
        test=split["test_images"],
        test_patients=split["test_patients"],
        test_percent=round(100 * recipe.test_fraction),
        seed=recipe.seed,
        size=recipe.input_size,
        width=recipe.width,
        parameters=metrics["parameters"],
        weights_kib=metrics["weights_bytes"] // 1024,
        epochs=recipe.epochs,
        batch=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        ema=recipe.ema_decay,
        targets=_targets_text(recipe),
        weak=_weak_text(metrics["outputs"]),
        folds=metrics["threshold_folds"],
        cross_validated=", ".join(
            f"{label} {_number(value)}"
            for label, value in metrics["training_split_cross_validated_auroc"].items()
        )
        or "not computed",
        table="\n".join(rows),
        threshold_method=metrics["threshold_method"],
        codes=codes or "none",
        triage=triage or "none",
        wall_minutes=metrics["wall_seconds"] / 60,
        threads=environment["torch_threads"],
        cpus=environment["cpu_count"],
        torch=environment["torch"],
        sha=metrics["weights_sha256"],
        uid=manifest.device_uid,
    )


def _targets_text(recipe: Recipe) -> str:
    teacher = (
        "the published CheXNet reproduction (`ref_prob_*` in labels.csv: a DenseNet-121 trained on "
        "ChestX-ray14, run on each training image)"
    )
    parts = []
    if recipe.distill < 1:
        target = "the true NIH label" if recipe.distill == 0 else f"{1 - recipe.distill:g} x the true label"
        if recipe.distill > 0:
            target += f" + {recipe.distill:g} x CheXNet's probability"
        parts.append(f"binary cross-entropy against {target}")
    else:
        parts.append("binary cross-entropy against CheXNet's probability alone")
    if recipe.logit_match:
        parts.append(
            f"{recipe.logit_match:g} x a smooth-L1 loss pulling each logit towards CheXNet's log-odds"
        )
    return (
        f"Knowledge distillation from {teacher}. The loss, over all 14 NIH labels: "
        + " plus ".join(parts)
        + ". The held-out images' labels and CheXNet outputs are never used for training."
    )


def _weak_text(results: list[dict[str, Any]]) -> str:
    weak = [
        FINDINGS[result["label"]].display_name
        for result in results
        if result["auroc_ci95"] is None or result["auroc_ci95"][0] <= 0.5
    ]
    if not weak:
        return ""
    return (
        f"**Not shown to beat chance on the held-out split: {', '.join(weak)}** (the interval reaches 0.5). "
        "The outputs were fixed before the held-out split was looked at, and choosing them by their "
        "held-out results would make that split a selection set, so they stay: treat their flags and "
        "heatmaps as noise. "
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


CARD_TEMPLATE = """\
# openaim demonstration chest X-ray model {version}

**A demonstration, not for clinical use.** This model exists to show how the openaim platform installs a
model, runs it, draws its heatmaps, flags a worklist and collects readers' feedback. It was trained in
minutes on {train} images and two CPU cores; it is far weaker than any clinical product and must never
inform the care of a patient.

## What it is
- A small residual CNN (`inference.models.demo_cxr:DemoCXRNet`, width {width}: {parameters} parameters,
  {weights_kib} KiB of weights) reading one grey channel at {size}x{size} pixels.
- Outputs (logits; the platform applies the sigmoid): {outputs}.
- Class activation maps work: the network ends in `features`, global average pooling and one linear
  `classifier`. At this input size the map is coarse (1/32 of the input).
- The package: `manifest.json`, `weights.pt` (a state dict, sha256 `{sha}`), `metrics.json` (every number
  on this page, written by the training script) and this card. DICOM device UID `{uid}`, derived from
  the weights' sha256, so every retrained version gets its own.

## Data
{total} frontal chest radiographs from NIH ChestX-ray14, as redistributed in the starter images of
jrzech/reproduce-chexnet: 465 downsized to 256x256 and 56 at 1024x1024, 8-bit greyscale PNG. Labels are
NIH's, text-mined from the radiology reports. The set is enriched for findings; it is not a screening
population. No age, sex or scanner data comes with it.

Attribution: {attribution}

## Split
By patient (the first 8 digits of an NIH file name), stratified by each patient's rarest positive finding,
with a seeded shuffle (seed {seed}): {train} images ({train_patients} patients) to train, {test} images
({test_patients} patients, about {test_percent}%) held out. The held-out labels and CheXNet outputs were used
only to measure the final model, never to train it, to choose its thresholds or to choose its recipe; the
recipe (input size, epochs, loss, which outputs to ship) was chosen by cross-validation inside the
training split.

## Training recipe
- Pixels go through the platform's own `inference.runtime.transform.to_model_input` with this package's
  preprocessing (short side resized to {size}, centre crop, one channel, (x/255 - 0.5) / 0.25), so training
  and inference see the same numbers. The inputs are computed once and kept in memory.
- Augmentation per batch: rotation within 10 degrees, zoom 0.87-1.13, shift within 8%, contrast
  0.8-1.2 and brightness within 0.3 (in normalised units). No horizontal flip (the heart is on the left).
- {targets}
- All 14 labels are learnt, as extra signal for the shared features; the package ships only {outputs}
  (the other rows of the classifier are dropped; see "How the recipe and outputs were chosen").
- AdamW (learning rate {learning_rate}, weight decay {weight_decay}), one-cycle schedule, {epochs} epochs of
  batches of {batch}; the shipped weights are an exponential moving average (decay {ema}).
- Seeded and deterministic: `torch.use_deterministic_algorithms(True)`, {threads} threads. Two runs on
  one machine give byte-identical weights; another CPU or torch version may differ in the last bits.

## How the recipe and outputs were chosen
Before this run, exploratory 3-fold cross-validation inside the training split (never the held-out split)
compared input sizes 128 and 160, 40, 80 and 120 epochs, soft-target cross-entropy against logit matching
(and both), and widths 24 and 32. Longer training and logit matching helped; 160 pixels and the narrower
network did not. The shipped outputs are those that reached a cross-validated AUROC of at least 0.70 with at
least 25 training positives in the exploratory run of this exact recipe: Cardiomegaly 0.85, Effusion 0.76,
Mass 0.72, Emphysema 0.73. Edema (0.79) and Hernia (0.75) had 13 positives each, too few to trust;
Pneumothorax (0.59) is not shipped, so this model raises no urgent flag.

This run's own cross-validated AUROC inside the training split ({folds} folds, the scores its thresholds
were chosen on), for all 14 labels: {cross_validated}. Its folds differ from the exploratory run's, and
with 30-60 positives per label the estimates move by up to 0.1 between fold assignments.

## Performance on the held-out split
| Finding | AUROC | 95% CI (DeLong) | test positives / negatives | CheXNet, same images | threshold \
| sensitivity / specificity at threshold |
|---|---|---|---|---|---|---|
{table}

With ten-odd positives per finding the intervals are wide: an interval wholly above 0.5 says "better than
chance", not how much better. {weak}The CheXNet column is the 121-layer teacher, trained on about 100,000
ChestX-ray14 images, on the same held-out images; it is shown for scale only (it may have seen these
images during its own training, so its numbers may be optimistic).

## Probabilities and operating thresholds
{threshold_method}. Each output's Platt scale and offset (in metrics.json) are folded into its classifier
row, so the package still returns plain logits. The probabilities therefore estimate how likely a finding
is in a set enriched like this one, not in a hospital's population, and the thresholds are a
demonstration's: taken from a few dozen positives.

## Codes and triage
Codes: {codes}; the other outputs carry no code. Triage: {triage}.

## Limitations
- Tiny data: {train} training images, a few dozen positives per finding; the model has learnt coarse
  appearance (heart size, blunted costophrenic angles, dense lower zones), not radiology.
- Enriched set: prevalence here is far above a hospital's, so predictive values do not transfer.
- No demographics: performance by age, sex or scanner is unknown.
- 8-bit PNG source (already windowed and downsized by NIH), not DICOM: real DICOM reaches the model
  through the platform's VOI/windowing to 8 bits, which may not match what NIH did.
- NIH labels are text-mined and noisy, and distillation passes on the teacher's errors as well as its
  knowledge.
- Frontal views only; the model has never seen a lateral view, a child, or a CT.

## Reproduce
```
python -m inference.training.demo_cxr --out inference/packages/openaim-demo-cxr
```
This run took {wall_minutes:.1f} minutes wall time for the whole script (loading, cross-validated
thresholds, training, evaluation, writing the package) on a machine with {cpus} CPU cores shared with
other jobs, torch {torch} with {threads} threads.
"""


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = Recipe()
    parser = argparse.ArgumentParser(
        prog="python -m inference.training.demo_cxr", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="the package folder to write")
    parser.add_argument(
        "--data", type=Path, default=None, help="the cxr14 folder (default: <shared data>/cxr14)"
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--input-size", type=int, default=defaults.input_size)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (smoke tests)")
    parser.add_argument(
        "--threshold-folds",
        type=int,
        default=THRESHOLD_FOLDS,
        help="folds for out-of-fold thresholds; 1: the final model's own training scores (smoke tests)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    recipe = replace(
        Recipe(), epochs=arguments.epochs, input_size=arguments.input_size, limit=arguments.limit
    )
    data_dir = arguments.data or Settings().shared_data_dir / "cxr14"
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    run(recipe, data_dir, arguments.out, arguments.threshold_folds, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
