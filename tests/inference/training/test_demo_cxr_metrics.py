"""The demo model's measurements against their definitions: Mann-Whitney AUROC, DeLong intervals, Youden
thresholds, Platt scaling, and the stated triage rule with the share of studies each level flags."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from inference.training.demo_cxr_metrics import (
    TRIAGE_SPECIFICITY,
    auroc,
    delong_interval,
    platt_scaling,
    specificity_threshold,
    triage_rules,
    triage_shares,
    youden_threshold,
)


def test_auroc_is_the_mann_whitney_statistic_ties_included() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random(200) < 0.2).astype(float)
    scores = np.round(rng.random(200) + 0.5 * truth, 1)  # rounded: many ties
    u = mannwhitneyu(scores[truth > 0], scores[truth == 0]).statistic
    assert auroc(scores, truth) == pytest.approx(u / (truth.sum() * (1 - truth).sum()))
    assert auroc(np.array([0.1, 0.2, 0.9]), np.array([0.0, 0.0, 1.0])) == 1.0
    assert auroc(np.array([0.1, 0.2]), np.array([1.0, 1.0])) is None


def test_the_delong_interval_brackets_the_auroc_and_narrows_with_more_cases() -> None:
    rng = np.random.default_rng(1)

    def width(n: int) -> float:
        truth = (np.arange(n) % 4 == 0).astype(float)
        scores = rng.random(n) + 0.6 * truth
        interval = delong_interval(scores, truth)
        assert interval is not None
        low, high = interval
        assert low <= auroc(scores, truth) <= high  # type: ignore[operator]
        return high - low

    assert width(2000) < width(100) / 2


def test_the_youden_threshold_separates_separable_scores() -> None:
    truth = np.array([0, 0, 0, 1, 1], dtype=float)
    threshold = youden_threshold(np.array([0.1, 0.2, 0.3, 0.6, 0.8]), truth)
    assert 0.3 < threshold < 0.6


def test_platt_scaling_recovers_a_known_calibration() -> None:
    rng = np.random.default_rng(2)
    raw = rng.normal(-4.0, 1.5, 4000)  # logits of a model that is too sure of "no"
    truth = (rng.random(4000) < 1 / (1 + np.exp(-(2.0 * raw + 6.0)))).astype(float)
    scale, offset = platt_scaling(1 / (1 + np.exp(-raw)), truth)
    assert scale == pytest.approx(2.0, abs=0.3) and offset == pytest.approx(6.0, abs=1.0)
    assert platt_scaling(np.array([0.9, 0.1]), np.array([0.0, 1.0])) == (1.0, 0.0)  # no reversal


def test_the_specificity_threshold_is_the_lowest_cut_that_keeps_the_specificity() -> None:
    negatives = np.arange(1, 21) / 100  # 0.01 .. 0.20: twenty negatives
    scores = np.concatenate([negatives, [0.5]])
    truth = np.concatenate([np.zeros(20), [1.0]])
    cut = specificity_threshold(scores, truth, 0.95)  # 19 of 20 below: between 0.19 and 0.20
    assert 0.19 < cut <= 0.20 and (negatives < cut).mean() >= 0.95
    assert 0.18 < specificity_threshold(scores, truth, 0.90) <= 0.19


def test_a_triage_rule_never_fires_below_the_outputs_own_threshold_and_reports_its_rates() -> None:
    rng = np.random.default_rng(3)
    truth = (rng.random((400, 2)) < 0.3).astype(float)
    scores = np.clip(rng.random((400, 2)) * 0.6 + 0.35 * truth, 0, 1)
    outputs, thresholds = ["A", "B"], np.array([0.2, 0.99])
    rules = triage_rules(outputs, {"A": "urgent", "B": "priority"}, (scores, truth), thresholds)
    urgent, priority = rules
    assert urgent["validation_specificity"] >= TRIAGE_SPECIFICITY["urgent"]
    assert urgent["min_probability"] > thresholds[0]  # the specificity bar is the higher one here
    assert priority["min_probability"] == 0.99  # the output's threshold is higher: a flag needs a finding
    assert urgent["validation_sensitivity"] == pytest.approx(
        (scores[truth[:, 0] > 0, 0] >= urgent["min_probability"]).mean(), abs=1e-3
    )


def test_each_study_counts_once_at_the_highest_level_a_rule_raises() -> None:
    rules = [
        {"label": "A", "priority": "urgent", "min_probability": 0.8},
        {"label": "B", "priority": "priority", "min_probability": 0.5},
    ]
    scores = np.array([[0.9, 0.9], [0.1, 0.6], [0.1, 0.1], [0.2, 0.2]])
    shares = triage_shares(["A", "B"], rules, scores)
    assert shares == {"urgent": 0.25, "priority": 0.25, "routine": 0.5}
