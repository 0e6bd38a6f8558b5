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

This module runs the pieces in order and is the command: ``demo_cxr_recipe`` (what decides the weights),
``demo_cxr_data`` (images and the patient split), ``demo_cxr_training`` (the loop and the shipped network),
``demo_cxr_metrics`` (AUROC, intervals, calibration, thresholds), ``demo_cxr_localisation`` (heatmaps
against NIH's radiologist-drawn boxes), ``demo_cxr_package`` (names, findings,
manifest) and ``demo_cxr_card`` (MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.manifest import MANIFEST_NAME
from inference.models.chexnet import LABELS
from inference.training.demo_cxr_card import model_card
from inference.training.demo_cxr_data import load_dataset, split_by_patient, split_summary
from inference.training.demo_cxr_localisation import load_truth_boxes, measure
from inference.training.demo_cxr_metrics import (
    TRIAGE_RULE_TEXT,
    auroc,
    calibrated,
    evaluate,
    operating_points,
    triage_rules,
    triage_shares,
)
from inference.training.demo_cxr_package import (
    CARD_NAME,
    FINDINGS,
    METRICS_NAME,
    PACKAGE_ID,
    VERSION,
    WEIGHTS_NAME,
    build_manifest,
)
from inference.training.demo_cxr_recipe import Recipe
from inference.training.demo_cxr_training import (
    Log,
    make_deterministic,
    out_of_fold,
    predict,
    shipped_model,
    train,
)
from openaim.settings import Settings

THRESHOLD_FOLDS = 3  # out-of-fold scores for choosing thresholds (see out_of_fold)


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
        "split": split_summary(data.names, train_rows, test_rows),
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
        "triage": triage_summary(
            recipe, (calibrated(scores[:, columns], calibration), labels[:, columns]), thresholds, test_scores
        ),
        "localisation": measure(
            every_output(trained, recipe, calibration),
            dict(zip(data.names, data.images, strict=True)),
            list(LABELS),
            dict(zip(recipe.outputs, (float(t) for t in thresholds), strict=True)),
            load_truth_boxes(),
            {data.names[i] for i in test_rows},
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


def every_output(
    trained: torch.nn.Module, recipe: Recipe, calibration: list[tuple[float, float]]
) -> torch.nn.Module:
    """The trained network with all fourteen outputs, the shipped ones calibrated exactly as shipped: its
    maps for the shipped findings are the package's, and the others' come from the same features."""
    folded = dict(zip(recipe.outputs, calibration, strict=True))
    return shipped_model(
        trained, replace(recipe, outputs=LABELS), [folded.get(label, (1.0, 0.0)) for label in LABELS]
    )


def triage_summary(
    recipe: Recipe, validation: tuple[np.ndarray, np.ndarray], thresholds: np.ndarray, test_scores: np.ndarray
) -> dict[str, Any]:
    """The triage rules by the stated rule, on the same validation scores as the thresholds, and the share
    of studies each level flags there and on the held-out split: so a reader can tell a flag's rate is by
    design."""
    outputs = list(recipe.outputs)
    levels = {label: level for label in outputs if (level := FINDINGS[label].triage)}
    rules = triage_rules(outputs, levels, validation, thresholds)
    return {
        "rule": TRIAGE_RULE_TEXT,
        "rules": rules,
        "validation_images": len(validation[0]),
        "validation_share": triage_shares(outputs, rules, validation[0]),
        "test_share": triage_shares(outputs, rules, test_scores),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


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
