"""A display image (what a reader sees, 8-bit greyscale) to the tensor a model package asks for.

Models here are trained on 8-bit images (ChestX-ray14 is distributed as 8-bit PNG), so the model reads the
image as a reader sees it: windowed, MONOCHROME2, 8 bits. Resizing works on 8-bit PIL images exactly as
torchvision's ``Resize`` does, so a checkpoint trained with torchvision transforms sees the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from inference.manifest import Preprocessing, ResizeMode


@dataclass(frozen=True)
class Crop:
    """The part of the source image the model input covers, in source pixels (x0, y0, x1, y1; x1/y1
    exclusive). With letterboxing it is larger than the image; the padding lies outside it."""

    x0: float
    y0: float
    x1: float
    y1: float

    def as_text(self) -> str:
        return ",".join(f"{value:g}" for value in (self.x0, self.y0, self.x1, self.y1))

    def to_source(self, points: np.ndarray, input_size: int) -> np.ndarray:
        """Model-input coordinates (x, y) to source-image coordinates."""
        scale = np.array([(self.x1 - self.x0) / input_size, (self.y1 - self.y0) / input_size])
        return points * scale + np.array([self.x0, self.y0])

    def paint(self, heatmap: np.ndarray, rows: int, columns: int) -> np.ndarray:
        """A model-input map laid back onto the (rows, columns) source grid; zero where the input did not
        reach (outside a centre crop)."""
        left, top = round(self.x0), round(self.y0)
        width, height = max(1, round(self.x1 - self.x0)), max(1, round(self.y1 - self.y0))
        resized = np.asarray(
            Image.fromarray(heatmap.astype(np.float32), mode="F").resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        canvas = np.zeros((rows, columns), dtype=np.float32)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + height, rows), min(left + width, columns)
        if y1 > y0 and x1 > x0:
            canvas[y0:y1, x0:x1] = resized[y0 - top : y1 - top, x0 - left : x1 - left]
        return np.clip(canvas, 0.0, 1.0)


def to_model_input(image: np.ndarray, preprocessing: Preprocessing) -> tuple[torch.Tensor, Crop]:
    """An (H, W) uint8 image to a normalised (C, S, S) tensor, and the region of the image it covers."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"expected an (H, W) uint8 image, got {image.dtype} {image.shape}")
    size = preprocessing.input_size
    picture = Image.fromarray(image, mode="L")
    if preprocessing.resize is ResizeMode.RESIZE_SHORT_CROP_CENTER:
        picture, crop = _resize_short_crop_center(picture, size)
    elif preprocessing.resize is ResizeMode.STRETCH:
        crop = Crop(0, 0, picture.width, picture.height)
        picture = picture.resize((size, size), Image.Resampling.BILINEAR)
    else:
        picture, crop = _letterbox(picture, size)
    if preprocessing.channels == 3:
        picture = picture.convert("RGB")  # what CheXNet-style training did: grey copied into R, G, B
    array = np.asarray(picture, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    # numpy, not torch: this runs in the service's reader threads, and a torch operation in a thread gives
    # that thread its own OpenMP team; once there are more OpenMP threads than cores, libgomp stops letting
    # idle ones spin, and the model's forward pass in the service thread ran 1.8x slower for good (measured
    # 150 vs 82 ms, DenseNet-121 batch 1 on 2 cores)
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    normalised = (array - mean) / std
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1))), crop


def _resize_short_crop_center(picture: Image.Image, size: int) -> tuple[Image.Image, Crop]:
    # torchvision Resize(size): the short side becomes ``size``, the long side int(size * long / short)
    width, height = picture.size
    if width <= height:
        new_width, new_height = size, int(size * height / width)
    else:
        new_width, new_height = int(size * width / height), size
    resized = picture.resize((new_width, new_height), Image.Resampling.BILINEAR)
    # torchvision CenterCrop: offsets rounded to the nearest pixel
    left = round((new_width - size) / 2.0)
    top = round((new_height - size) / 2.0)
    cropped = resized.crop((left, top, left + size, top + size))
    scale_x, scale_y = width / new_width, height / new_height
    crop = Crop(left * scale_x, top * scale_y, (left + size) * scale_x, (top + size) * scale_y)
    return cropped, crop


def _letterbox(picture: Image.Image, size: int) -> tuple[Image.Image, Crop]:
    width, height = picture.size
    scale = size / max(width, height)
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = Image.new("L", (size, size), 0)
    left, top = (size - new_width) // 2, (size - new_height) // 2
    canvas.paste(picture.resize((new_width, new_height), Image.Resampling.BILINEAR), (left, top))
    crop = Crop(-left / scale, -top / scale, (size - left) / scale, (size - top) / scale)
    return canvas, crop
