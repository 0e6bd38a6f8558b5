"""What a model said about one output on one image: the input of both the SR and the SEG writer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inference.manifest import Code

Box = tuple[float, float, float, float]


# eq=False: the heatmap is an array, and a generated __eq__ would compare it element-wise and fail.
@dataclass(frozen=True, eq=False)
class FindingResult:
    label: str
    display_name: str
    code: Code | None  # None: a private code in the scheme 99OPENAIM, made from the label
    probability: float
    threshold: float
    positive: bool
    # (x0, y0, x1, y1) in source image pixel coordinates: x along columns, y along rows, (0, 0) the
    # top-left corner of the top-left pixel, which is also how SR image coordinates count (PS3.3 C.18.6.1.2)
    boxes: list[Box]
    heatmap: np.ndarray | None  # float32 (Rows, Columns), 0..1, on the source image's pixel grid

    def __post_init__(self) -> None:
        if not (math.isfinite(self.probability) and 0.0 <= self.probability <= 1.0):
            raise ValueError(f"{self.label}: probability must be between 0 and 1")
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"{self.label}: threshold must be between 0 and 1")
        for box in self.boxes:
            if len(box) != 4 or not all(math.isfinite(value) for value in box):
                raise ValueError(f"{self.label}: a box is four finite numbers (x0, y0, x1, y1)")
        if self.heatmap is not None:
            if self.heatmap.ndim != 2:
                raise ValueError(f"{self.label}: a heatmap is a 2-D array (Rows, Columns)")
            if not np.isfinite(self.heatmap).all():
                raise ValueError(f"{self.label}: the heatmap holds NaN or infinite values")
