"""The image the model read, as the SR and SEG reference it: which frame, and which pixel grid."""

from __future__ import annotations

import numpy as np
from pydicom import Dataset


def referenced_frame(source: Dataset, frame: int | None) -> int | None:
    """The DICOM Frame Number (from 1) that a reference must name; None for a single-frame image.

    A multi-frame source without a frame is refused rather than guessed: a result drawn on the wrong
    frame is worse than no result.
    """
    if "NumberOfFrames" not in source:
        if frame not in (None, 1):
            raise ValueError(f"frame {frame} given for a single-frame image")
        return None
    frames = int(source.NumberOfFrames)
    if frame is None:
        if frames == 1:
            return 1
        raise ValueError("a multi-frame image needs the frame number the model read")
    if not 1 <= frame <= frames:
        raise ValueError(f"frame {frame} is not one of the image's frames 1..{frames}")
    return frame


def on_grid(source: Dataset, heatmap: np.ndarray) -> np.ndarray:
    """A heatmap as float32 0..1 on the source's pixel grid; a grid mismatch is the caller's bug."""
    shape = (int(source.Rows), int(source.Columns))
    if heatmap.shape != shape:
        raise ValueError(f"heatmap is {heatmap.shape}, the image is {shape} (Rows, Columns)")
    return np.clip(heatmap.astype(np.float32, copy=False), 0.0, 1.0)
