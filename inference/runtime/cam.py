"""Where the model looked: class activation maps (CAM, Zhou et al. 2016) and the boxes drawn from them.

CAM needs a module ending in global average pooling and one linear layer, which is what CheXNet-style
classifiers are: the map for class k is the classifier's row k applied to the last feature map, so it costs
one small matrix product on features the forward pass computes anyway.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

# Boxes surround the map's peaks, not everything over a low cut: a cut at half the map's range joined
# every warm cell into one region the size of a hemithorax. A peak is a local maximum of the map that
# reaches PEAK_LEVEL of its range; its box spans the connected cells around it that keep at least
# REGION_LEVEL of the peak's own height.
PEAK_LEVEL = 0.6
REGION_LEVEL = 0.75
PEAK_NEIGHBOURHOOD = 0.1  # two maxima closer than this fraction of the map's side are one peak
MAX_BOXES = 3
MIN_BOX_FRACTION = 0.002  # regions smaller than 0.2% of the image (6x6 of 128) are noise, not a location


def supports_cam(model: torch.nn.Module) -> bool:
    classifier = getattr(model, "classifier", None)
    return hasattr(model, "features") and isinstance(classifier, torch.nn.Linear)


def logits_and_cams(model: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K) logits and (B, K, h, w) raw class activation maps, from one pass through the features."""
    extract, classifier = model.features, model.classifier
    assert callable(extract) and isinstance(classifier, torch.nn.Linear)
    features = torch.relu(extract(batch))
    logits = classifier(features.mean(dim=(2, 3)))
    cams = torch.einsum("kc,bchw->bkhw", classifier.weight.to(features.dtype), features)
    return logits, cams


def normalised_map(cam: torch.Tensor, size: int) -> np.ndarray:
    """A raw (h, w) map upsampled to the model input (size, size), scaled to 0..1 (relative attention)."""
    upsampled = torch.nn.functional.interpolate(
        cam[None, None].float(), size=(size, size), mode="bilinear", align_corners=False
    )[0, 0]
    low, high = upsampled.min(), upsampled.max()
    scaled = (upsampled - low) / (high - low) if high > low else torch.zeros_like(upsampled)
    return scaled.cpu().numpy().astype(np.float32)


def boxes_from_map(heatmap: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1), exclusive ends, around the map's highest peaks, highest first.

    ``heatmap`` is a map scaled to 0..1 (``normalised_map``). Each peak's region is the connected part of
    the map at or above ``REGION_LEVEL`` of that peak; a peak inside an earlier peak's region adds nothing.
    """
    neighbourhood = max(3, round(PEAK_NEIGHBOURHOOD * max(heatmap.shape)) | 1)
    is_peak = (heatmap == ndimage.maximum_filter(heatmap, size=neighbourhood)) & (heatmap >= PEAK_LEVEL)
    rows, cols = np.nonzero(is_peak)
    covered = np.zeros(heatmap.shape, dtype=bool)
    min_area = MIN_BOX_FRACTION * heatmap.size
    boxes: list[tuple[int, int, int, int]] = []
    for index in np.argsort(heatmap[rows, cols], kind="stable")[::-1]:
        row, col = rows[index], cols[index]
        if covered[row, col]:
            continue
        regions, _ = ndimage.label(heatmap >= REGION_LEVEL * heatmap[row, col])
        region = regions == regions[row, col]
        covered |= region
        region_rows, region_cols = ndimage.find_objects(region.astype(np.int32))[0]
        if (region_rows.stop - region_rows.start) * (region_cols.stop - region_cols.start) < min_area:
            continue
        boxes.append((region_cols.start, region_rows.start, region_cols.stop, region_rows.stop))
        if len(boxes) == MAX_BOXES:
            break
    return boxes
