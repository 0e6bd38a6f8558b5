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
    probabilities = calibrated(scores, calibration)
    thresholds = [youden_threshold(probabilities[:, i], truth[:, i]) for i in range(scores.shape[1])]
    return calibration, np.array(thresholds)


def calibrated(scores: np.ndarray, calibration: list[tuple[float, float]]) -> np.ndarray:
    """The probabilities the shipped model gives for these scores: each column's Platt fit applied."""
    z = logit(np.clip(scores, 1e-6, 1 - 1e-6))
    return np.stack([expit(a * z[:, i] + c) for i, (a, c) in enumerate(calibration)], axis=1)


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


# The stated triage rule. A level is a specificity on validation data: among studies without the finding,
# at most 1 in 20 (urgent) or 1 in 10 (priority) is raised. Youden's cut, which decides a positive finding,
# flagged about a third of this enriched set, which reorders nothing; a flag earns its place on top of a
# worklist only if it is rare among studies that do not need it.
TRIAGE_SPECIFICITY = {"urgent": 0.95, "priority": 0.90}
TRIAGE_LEVELS = ("urgent", "priority")  # highest first; a study no rule raises is routine
TRIAGE_RULE_TEXT = (
    "each triage rule fires at the lowest probability that keeps specificity at or above "
    + " / ".join(f"{TRIAGE_SPECIFICITY[level]:.2f} ({level})" for level in TRIAGE_LEVELS)
    + " on the validation scores, and never below the output's own threshold, so a flag always comes "
    "with a positive finding; a study no rule raises is routine"
)


def specificity_threshold(scores: np.ndarray, truth: np.ndarray, specificity: float) -> float:
    """The lowest probability cut at which at least ``specificity`` of the negatives score below it,
    midway between two neighbouring scores (as for Youden) so it does not sit on one image's value."""
    negatives = np.sort(scores[truth <= 0])
    if len(negatives) == 0:
        return 0.5
    candidates = np.unique(scores)
    cuts = np.concatenate([(candidates[:-1] + candidates[1:]) / 2, [(candidates[-1] + 1.0) / 2]])
    kept = (negatives[None, :] < cuts[:, None]).mean(axis=1) >= specificity
    return min(max(float(cuts[int(np.argmax(kept))]), 1e-4), 1.0 - 1e-4)


def triage_rules(
    outputs: list[str],
    levels: dict[str, str],
    validation: tuple[np.ndarray, np.ndarray],
    thresholds: np.ndarray,
) -> list[dict[str, Any]]:
    """Per output with a triage level: its bar by the stated rule, and what that bar gives on validation.

    ``validation`` is (calibrated probabilities, truth), one column per output, in ``outputs`` order."""
    scores, truth = validation
    rules = []
    for index, label in enumerate(outputs):
        if label not in levels:
            continue
        column, positive = scores[:, index], truth[:, index] > 0
        level = levels[label]
        at_specificity = specificity_threshold(column, truth[:, index], TRIAGE_SPECIFICITY[level])
        bar = max(at_specificity, float(thresholds[index]))
        raised = column >= bar
        rules.append(
            {
                "label": label,
                "priority": level,
                "min_probability": round(float(bar), 4),
                "validation_sensitivity": _rate(raised[positive]),
                "validation_specificity": _rate(~raised[~positive]),
            }
        )
    return rules


def triage_shares(outputs: list[str], rules: list[dict[str, Any]], scores: np.ndarray) -> dict[str, float]:
    """The share of studies at each level (urgent, priority, routine) when the rules run on ``scores``:
    each study takes the highest level any rule raises, as the platform's predictor does."""
    rank = np.full(len(scores), len(TRIAGE_LEVELS))  # routine unless a rule raises it
    for rule in rules:
        raised = scores[:, outputs.index(rule["label"])] >= rule["min_probability"]
        rank = np.where(raised, np.minimum(rank, TRIAGE_LEVELS.index(rule["priority"])), rank)
    names = (*TRIAGE_LEVELS, "routine")
    return {name: round(float((rank == i).mean()), 3) if len(rank) else 0.0 for i, name in enumerate(names)}
