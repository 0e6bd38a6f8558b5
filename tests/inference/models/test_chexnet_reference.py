"""The regression oracle: the published CheXNet reproduction checkpoint, converted into a package and run by
the platform, reproduces the reference outputs in ``cxr14/labels.csv`` (``ref_prob_*``) for all 521 images.

The checkpoint (27 MB, BSD-3-Clause) is not in the repository; point OPENAIM_CHEXNET_CHECKPOINT at a copy of
jrzech/reproduce-chexnet ``pretrained/checkpoint`` to run it. Its preprocessing was
``Image.open(png).convert('RGB')``, ``Resize(224)``, ``CenterCrop(224)``, ``ToTensor()``, ImageNet
``Normalize``; the platform reads an (H, W) grey image and copies it into R, G and B after resizing, which
is the same thing exactly when every PNG's RGB conversion is its grey level three times (checked below,
including the one RGBA file: its colour channels are equal and its alpha is opaque).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.manifest import Preprocessing
from inference.models import chexnet
from inference.package import open_package
from inference.runtime.loader import load_model
from inference.runtime.transform import to_model_input
from openaim.settings import Settings

CHECKPOINT_VARIABLE = "OPENAIM_CHEXNET_CHECKPOINT"
TOLERANCE = 1e-4
BATCH = 8
RGBA_IMAGE = "full/00001369_000.png"  # the one RGBA file of the set


@pytest.fixture(scope="module")
def cxr14() -> Path:
    folder = Settings().shared_data_dir / "cxr14"
    assert (folder / "labels.csv").is_file(), f"the shared CXR14 data is missing: expected {folder}"
    return folder


@pytest.fixture(scope="module")
def preprocessing() -> Preprocessing:
    return Preprocessing.model_validate(chexnet.chexnet_manifest("0" * 64)["preprocessing"])


def rows(cxr14: Path) -> list[dict[str, str]]:
    with (cxr14 / "labels.csv").open(newline="") as stream:
        return list(csv.DictReader(stream))


def png_of(cxr14: Path, row: dict[str, str]) -> Path:
    return cxr14 / row["resolution"] / row["image"]


def as_the_reference_read_it(png: Path) -> torch.Tensor:
    """torchvision 0.2's pipeline: RGB, short side to 224 (bilinear), centre crop, /255, normalise."""
    picture = Image.open(png).convert("RGB")
    width, height = picture.size
    size = (224, int(224 * height / width)) if width <= height else (int(224 * width / height), 224)
    picture = picture.resize(size, Image.Resampling.BILINEAR)
    left, top = round((picture.width - 224) / 2), round((picture.height - 224) / 2)
    picture = picture.crop((left, top, left + 224, top + 224))
    tensor = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(chexnet.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(chexnet.IMAGENET_STD)[:, None, None]
    return (tensor - mean) / std


def as_the_platform_reads_it(png: Path, preprocessing: Preprocessing) -> torch.Tensor:
    grey = Image.open(png)
    as_rgb = np.asarray(grey.convert("RGB"))
    as_grey = np.asarray(grey.convert("L"))
    assert np.array_equal(as_rgb, np.repeat(as_grey[:, :, None], 3, axis=2)), f"{png.name}: not grey in RGB"
    return to_model_input(as_grey, preprocessing)[0]


@pytest.mark.parametrize("image", [RGBA_IMAGE, "full/00000981_000.png", "small/00000075_000.png"])
def test_the_platform_feeds_the_model_what_the_reference_fed_it(
    image: str, cxr14: Path, preprocessing: Preprocessing
) -> None:
    png = cxr14 / image
    assert torch.equal(as_the_platform_reads_it(png, preprocessing), as_the_reference_read_it(png))


@pytest.fixture(scope="module")
def published_checkpoint() -> Path:
    value = os.environ.get(CHECKPOINT_VARIABLE)
    if not value:
        pytest.skip(
            f"{CHECKPOINT_VARIABLE} is not set: set it to the path of jrzech/reproduce-chexnet "
            "pretrained/checkpoint to run the CheXNet regression oracle"
        )
    return Path(value)


def batches(items: list[dict[str, str]]) -> Iterator[list[dict[str, str]]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


@pytest.mark.slow
def test_the_published_checkpoint_reproduces_the_reference_probabilities(
    published_checkpoint: Path, cxr14: Path, tmp_path: Path
) -> None:
    chexnet.write_package(published_checkpoint, tmp_path / "package")  # the reference file's git hash only
    package = open_package(tmp_path / "package")
    model = load_model(package)  # fp32, CPU
    table = rows(cxr14)
    assert len(table) == 521
    columns = [f"ref_prob_{label}" for label in chexnet.LABELS]

    off: list[tuple[float, str, str, float, float]] = []
    worst = 0.0
    for group in batches(table):
        inputs = torch.stack(
            [as_the_platform_reads_it(png_of(cxr14, row), package.manifest.preprocessing) for row in group]
        )
        with torch.inference_mode():
            probabilities = torch.sigmoid(model(inputs)).numpy()
        expected = np.array([[float(row[column]) for column in columns] for row in group])
        difference = np.abs(probabilities - expected)
        worst = max(worst, float(difference.max()))
        for i, j in zip(*np.nonzero(difference > TOLERANCE), strict=True):
            off.append(
                (
                    float(difference[i, j]),
                    group[i]["image"],
                    chexnet.LABELS[j],
                    float(probabilities[i, j]),
                    float(expected[i, j]),
                )
            )

    shown = "\n".join(
        f"{image} {label}: ours {ours:.6f}, reference {ref:.6f}"
        for _, image, label, ours, ref in sorted(off, reverse=True)[:10]
    )
    assert not off, (
        f"{len(off)} of {len(table) * len(columns)} probabilities differ by more than {TOLERANCE} "
        f"(worst {worst:.2e}):\n{shown}"
    )
