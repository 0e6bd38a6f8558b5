"""Where the model looked: class activation maps (CAM, Zhou et al. 2016) and the boxes drawn from them.

CAM needs a module ending in global average pooling and one linear layer, which is what CheXNet-style
classifiers are: the map for class k is the classifier's row k applied to the last feature map, so it costs
one small matrix product on features the forward pass computes anyway.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

BOX_LEVEL = 0.5  # a box surrounds the part of the map at or above half its peak
MAX_BOXES = 3
MIN_BOX_FRACTION = 0.01  # regions smaller than 1% of the image are noise, not a location


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
    """Boxes (x0, y0, x1, y1), exclusive ends, around the largest regions at or above ``BOX_LEVEL``."""
    regions, count = ndimage.label(heatmap >= BOX_LEVEL)
    if count == 0:
        return []
    masses = ndimage.sum_labels(heatmap, regions, index=np.arange(1, count + 1))
    slices = ndimage.find_objects(regions)
    min_area = MIN_BOX_FRACTION * heatmap.size
    boxes: list[tuple[int, int, int, int]] = []
    for index in np.argsort(masses)[::-1]:
        rows, cols = slices[index]
        if (rows.stop - rows.start) * (cols.stop - cols.start) < min_area:
            continue
        boxes.append((cols.start, rows.start, cols.stop, rows.stop))
        if len(boxes) == MAX_BOXES:
            break
    return boxes
