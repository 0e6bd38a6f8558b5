"""Where the demo model's heatmaps point, measured against boxes a radiologist drew.

NIH published, with ChestX-ray14, 984 boxes that a radiologist drew around eight findings on 880 of its
images (``BBox_List_2017.csv``). Ten of them fall on the shared images; they are the only localisation
truth here, and ``nih_boxes.csv`` beside this module holds them, with their source. Boxes were never used
to train the model. Most of the ten are for findings the package does not ship (nodule, pneumonia), but
the network learns all fourteen labels and its maps for those come from the same features, so all ten
are scored, with the shipped findings' rows shown apart.

For each boxed finding the platform's own path draws the heatmap and its boxes (``inference.runtime.cam``),
and three things are counted:
- **pointing**: the map's highest point lies inside the radiologist's box (the "pointing game", Zhang et
  al. 2016). Its peer is chance: a point drawn uniformly over the image hits the box with probability
  area(box) / area(image), so the hit rate means something only above the mean of that.
- **overlap**: the best intersection over union between a drawn box and the radiologist's.
- **hit at 0.25**: some drawn box reaches an IoU of 0.25.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.runtime.cam import boxes_from_map, logits_and_cams, normalised_map

BOXES_PATH = Path(__file__).with_name("nih_boxes.csv")
NIH_IMAGE_SIDE = 1024  # every ChestX-ray14 image is 1024x1024; the boxes are in those pixels
IOU_HIT = 0.25
NIH_BOX_LABELS = {"Infiltrate": "Infiltration"}  # the box list names one finding unlike the label list

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass(frozen=True)
class TruthBox:
    image: str
    label: str
    box: Box  # in NIH's 1024-pixel coordinates


def load_truth_boxes(path: Path = BOXES_PATH) -> list[TruthBox]:
    """The rows of NIH's box list kept in ``path`` (lines starting with # say where they came from)."""
    with path.open(newline="") as stream:
        rows = list(csv.reader(line for line in stream if not line.startswith("#")))
    header, body = rows[0], rows[1:]
    if header[:2] != ["Image Index", "Finding Label"]:
        raise ValueError(f"{path}: not NIH's BBox_List_2017 layout (header {header[:3]})")
    boxes = []
    for row in body:
        x, y, w, h = (float(value) for value in row[2:6])  # NIH's header splits "Bbox [x,y,w,h]" in four
        label = NIH_BOX_LABELS.get(row[1], row[1])
        boxes.append(TruthBox(row[0], label, (x, y, x + w, y + h)))
    return boxes


def iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    return overlap / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap)


def score_one(heatmap: np.ndarray, truth: Box) -> dict[str, float | bool]:
    """Pointing, chance and best IoU for one map (model-input pixels) against one box (same pixels)."""
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    centre = (col + 0.5, row + 0.5)
    drawn = boxes_from_map(heatmap)
    side = heatmap.shape[0]
    clipped = (max(truth[0], 0), max(truth[1], 0), min(truth[2], side), min(truth[3], side))
    return {
        "pointing": bool(truth[0] <= centre[0] <= truth[2] and truth[1] <= centre[1] <= truth[3]),
        "chance": (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]) / side**2,
        "best_iou": max((iou(tuple(map(float, box)), truth) for box in drawn), default=0.0),  # type: ignore[arg-type]
        "boxes": len(drawn),
        "box_area": float(np.mean([(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in drawn])) / side**2
        if drawn
        else 0.0,
    }


def measure(
    model: torch.nn.Module,
    images: dict[str, torch.Tensor],
    outputs: list[str],
    thresholds: dict[str, float],
    truth: Iterable[TruthBox],
    held_out: set[str],
) -> dict[str, Any]:
    """Every boxed finding among ``outputs`` (the model's outputs, in order), scored, then summarised by
    split and by finding.

    ``images`` are model inputs by file name; ``held_out`` names the held-out split's images;
    ``thresholds`` holds the shipped outputs' operating points (the others have none, so no decision).
    """
    model.eval()
    cases = []
    for box in truth:
        if box.label not in outputs or box.image not in images:
            continue
        image = images[box.image]
        side = image.shape[-1]
        with torch.inference_mode():
            logits, cams = logits_and_cams(model, image[None])
        k = outputs.index(box.label)
        scale = side / NIH_IMAGE_SIDE
        scored = score_one(normalised_map(cams[0, k], side), tuple(v * scale for v in box.box))  # type: ignore[arg-type]
        probability = float(torch.sigmoid(logits[0, k]))
        cases.append(
            {
                "label": box.label,
                "split": "held_out" if box.image in held_out else "train",
                "positive": probability >= thresholds[box.label] if box.label in thresholds else None,
                **scored,
            }
        )
    return {
        "source": "NIH ChestX-ray14 BBox_List_2017.csv, the rows for shared images (nih_boxes.csv)",
        "iou_hit": IOU_HIT,
        "all": summarise(cases),
        "by_split": {
            split: summarise([c for c in cases if c["split"] == split]) for split in ("train", "held_out")
        },
        "by_label": {
            label: summarise([c for c in cases if c["label"] == label])
            for label in outputs
            if any(c["label"] == label for c in cases)
        },
    }


def summarise(cases: list[dict[str, Any]]) -> dict[str, Any]:
    if not cases:
        return {"boxes": 0}
    return {
        "boxes": len(cases),
        "shipped": sum(c["positive"] is not None for c in cases),
        "positive_at_threshold": sum(bool(c["positive"]) for c in cases),
        "pointing_hits": sum(c["pointing"] for c in cases),
        "pointing_rate": round(float(np.mean([c["pointing"] for c in cases])), 3),
        "chance_rate": round(float(np.mean([c["chance"] for c in cases])), 3),
        "mean_best_iou": round(float(np.mean([c["best_iou"] for c in cases])), 3),
        "iou_hits": sum(c["best_iou"] >= IOU_HIT for c in cases),
        "mean_boxes_drawn": round(float(np.mean([c["boxes"] for c in cases])), 2),
        "mean_box_area": round(float(np.mean([c["box_area"] for c in cases if c["boxes"]] or [0.0])), 3),
    }
