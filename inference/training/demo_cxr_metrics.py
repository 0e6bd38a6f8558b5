"""How the demo chest X-ray model is measured: AUROC with its DeLong interval, Platt calibration, Youden
thresholds, and the per-output results on the held-out split."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit

from inference.models.chexnet import LABELS
from inference.training.demo_cxr_recipe import Recipe


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
