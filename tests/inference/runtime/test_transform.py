"""The model sees the image exactly as torchvision's Resize + CenterCrop would show it, and what it finds
maps back onto the right source pixels."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.manifest import Preprocessing, ResizeMode
from inference.runtime.transform import Crop, to_model_input


def _preprocessing(resize: ResizeMode, size: int = 8, channels: int = 1) -> Preprocessing:
    return Preprocessing(
        input_size=size, channels=channels, resize=resize, mean=[0.5] * channels, std=[0.25] * channels
    )


def test_short_side_resize_and_centre_crop_match_the_pil_pipeline() -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(40, 60), dtype=np.uint8)
    tensor, crop = to_model_input(image, _preprocessing(ResizeMode.RESIZE_SHORT_CROP_CENTER, channels=3))
    reference = Image.fromarray(image).convert("RGB").resize((12, 8), Image.Resampling.BILINEAR)
    reference = reference.crop((2, 0, 10, 8))  # CenterCrop(8) of a 12x8 image
    expected = (np.asarray(reference, dtype=np.float32) / 255.0 - 0.5) / 0.25
    assert tensor.shape == (3, 8, 8)
    np.testing.assert_allclose(tensor.numpy().transpose(1, 2, 0), expected, atol=1e-6)
    assert crop == Crop(10.0, 0.0, 50.0, 40.0)  # the middle 40 of the 60 columns


def test_letterbox_keeps_the_aspect_ratio_and_the_crop_covers_the_padding() -> None:
    image = np.full((10, 20), 255, dtype=np.uint8)
    tensor, crop = to_model_input(image, _preprocessing(ResizeMode.LETTERBOX))
    rows_with_image = (tensor[0] > 0).any(dim=1)
    assert rows_with_image.tolist() == [False, False, True, True, True, True, False, False]
    assert crop == Crop(0.0, -5.0, 20.0, 15.0)


def test_model_input_points_map_back_to_source_pixels() -> None:
    crop = Crop(10.0, 0.0, 50.0, 40.0)
    points = crop.to_source(np.array([[0.0, 0.0], [8.0, 8.0], [4.0, 2.0]]), input_size=8)
    np.testing.assert_allclose(points, [[10, 0], [50, 40], [30, 10]])


def test_a_heatmap_is_painted_back_inside_the_crop_only() -> None:
    heatmap = np.ones((8, 8), dtype=np.float32)
    painted = Crop(10.0, 0.0, 50.0, 40.0).paint(heatmap, rows=40, columns=60)
    assert painted.shape == (40, 60)
    assert painted[:, 10:50].min() == pytest.approx(1.0)
    assert painted[:, :10].max() == 0.0 and painted[:, 50:].max() == 0.0


def test_anything_but_an_8_bit_greyscale_image_is_refused() -> None:
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(np.zeros((4, 4), dtype=np.uint16), _preprocessing(ResizeMode.STRETCH))
    assert isinstance(
        to_model_input(np.zeros((4, 4), np.uint8), _preprocessing(ResizeMode.STRETCH))[0], torch.Tensor
    )


def _threads_started_by(work: Callable[[], object]) -> int:
    """How many threads started while ``work`` ran in a fresh thread (Linux: /proc/self/task)."""
    counts: list[int] = []

    def run() -> None:
        before = set(os.listdir("/proc/self/task"))
        work()
        counts.append(len(set(os.listdir("/proc/self/task")) - before))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return counts[0]


@pytest.mark.skipif(
    not (torch.backends.openmp.is_available() and torch.get_num_threads() > 1 and Path("/proc").is_dir()),
    reason="needs torch with OpenMP on more than one core, and Linux's /proc, to show an OpenMP team",
)
def test_preprocessing_in_a_reader_thread_starts_no_openmp_team() -> None:
    # The service preprocesses in reader threads; an OpenMP team there slows the model's forward pass in
    # the service thread 1.8x (see to_model_input). First, that the probe sees a team when torch starts one.
    assert _threads_started_by(lambda: torch.zeros(3, 224, 224) / 2) > 0
    image = np.zeros((512, 512), dtype=np.uint8)
    preprocessing = _preprocessing(ResizeMode.RESIZE_SHORT_CROP_CENTER, size=224, channels=3)
    assert _threads_started_by(lambda: to_model_input(image, preprocessing)) == 0
