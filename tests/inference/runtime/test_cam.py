"""Boxes surround the peaks of a class activation map, not everything over a low cut."""

from __future__ import annotations

import numpy as np
import pytest

from inference.runtime.cam import MAX_BOXES, boxes_from_map


def blob(size: int, centre: tuple[float, float], radius: float, height: float = 1.0) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size]
    distance2 = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2
    return (height * np.exp(-distance2 / (2 * radius**2))).astype(np.float32)


def test_one_peak_gets_one_box_centred_on_it_and_tighter_than_its_half_height() -> None:
    heatmap = blob(128, centre=(40, 90), radius=8)
    [(x0, y0, x1, y1)] = boxes_from_map(heatmap)
    assert x0 < 90 < x1 and y0 < 40 < y1
    # a cut at half the peak spans about 2.35 radii; the box spans the top quarter of the peak only
    assert x1 - x0 < 2.35 * 8 and y1 - y0 < 2.35 * 8


def test_two_separate_peaks_on_a_warm_background_get_two_boxes_not_one_around_both() -> None:
    heatmap = 0.9 * blob(128, (64, 64), radius=40) + blob(128, (40, 30), 6) + 0.8 * blob(128, (90, 100), 6)
    heatmap = (heatmap - heatmap.min()) / (heatmap.max() - heatmap.min())
    boxes = boxes_from_map(heatmap)
    assert len(boxes) == 2
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes
    assert ax0 < 30 < ax1 and ay0 < 40 < ay1  # the higher peak first
    assert bx0 < 100 < bx1 and by0 < 90 < by1
    assert ax1 < bx0 or bx1 < ax0  # apart, as the peaks are


def test_a_low_bump_is_not_a_peak() -> None:
    heatmap = blob(128, (30, 30), 6) + 0.4 * blob(128, (100, 100), 6)
    assert len(boxes_from_map(heatmap)) == 1


@pytest.mark.parametrize("seed", range(5))
def test_never_more_than_the_maximum_and_always_inside_the_map(seed: int) -> None:
    noisy = np.random.default_rng(seed).random((128, 128)).astype(np.float32)
    boxes = boxes_from_map(noisy)
    assert len(boxes) <= MAX_BOXES
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128


def test_a_flat_map_has_no_box_smaller_than_noise() -> None:
    assert boxes_from_map(np.zeros((128, 128), dtype=np.float32)) == []
