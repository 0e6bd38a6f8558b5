"""Where the heatmaps point: NIH's box rows read as NIH wrote them, and a map is scored against a box by
its peak, by chance and by the overlap of the boxes the platform draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.models.demo_cxr import DemoCXRNet
from inference.training.demo_cxr_localisation import (
    BOXES_PATH,
    NIH_IMAGE_SIDE,
    TruthBox,
    iou,
    load_truth_boxes,
    measure,
    score_one,
)


def test_nih_rows_are_read_with_their_split_header_and_trailing_empty_columns(tmp_path: Path) -> None:
    path = tmp_path / "boxes.csv"
    path.write_text(
        "# source: somewhere\n"
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000001_000.png,Effusion,10.5,20,30,40,,,\n"
    )
    [box] = load_truth_boxes(path)
    assert (box.image, box.label, box.box) == ("00000001_000.png", "Effusion", (10.5, 20.0, 40.5, 60.0))


def test_a_file_in_another_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "boxes.csv"
    path.write_text("image,label,x,y,w,h\n")
    with pytest.raises(ValueError, match="BBox_List_2017"):
        load_truth_boxes(path)


def test_the_committed_boxes_are_nih_rows_for_shared_images() -> None:
    boxes = load_truth_boxes(BOXES_PATH)
    assert boxes, "nih_boxes.csv holds at least one row"
    for box in boxes:
        x0, y0, x1, y1 = box.box
        assert 0 <= x0 < x1 <= NIH_IMAGE_SIDE and 0 <= y0 < y1 <= NIH_IMAGE_SIDE
        assert box.image.endswith(".png") and len(box.image) == len("00000001_000.png")
    assert "BBox_List_2017.csv" in BOXES_PATH.read_text().split("Image Index")[0]  # its source is stated


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_a_map_peaking_inside_the_box_points_at_it_and_its_drawn_box_overlaps() -> None:
    rows, cols = np.mgrid[0:128, 0:128]
    heatmap = np.exp(-((rows - 40) ** 2 + (cols - 90) ** 2) / (2 * 10**2)).astype(np.float32)
    inside = score_one(heatmap, (80.0, 30.0, 100.0, 50.0))
    assert inside["pointing"] is True
    assert inside["chance"] == pytest.approx(20 * 20 / 128**2)
    assert float(inside["best_iou"]) > 0.5
    elsewhere = score_one(heatmap, (0.0, 80.0, 40.0, 120.0))
    assert elsewhere["pointing"] is False and elsewhere["best_iou"] == 0.0


def test_measure_scores_only_shipped_outputs_on_loaded_images_and_splits_them() -> None:
    torch.manual_seed(0)
    model = DemoCXRNet(n_outputs=2, width=8)
    images = {"a.png": torch.randn(1, 64, 64), "b.png": torch.randn(1, 64, 64)}
    truth = [
        _box("a.png", "Effusion"),
        _box("b.png", "Mass"),
        _box("b.png", "Nodule"),  # not shipped
        _box("c.png", "Mass"),  # not loaded
    ]
    result = measure(model, images, ["Effusion", "Mass"], {"Effusion": 0.5, "Mass": 0.5}, truth, {"b.png"})
    assert result["all"]["boxes"] == 2
    assert result["by_split"]["train"]["boxes"] == 1 and result["by_split"]["held_out"]["boxes"] == 1
    assert result["by_label"]["Mass"]["boxes"] == 1
    assert 0 < result["all"]["chance_rate"] < 1


def _box(image: str, label: str) -> TruthBox:
    return TruthBox(image, label, (256.0, 256.0, 768.0, 768.0))
