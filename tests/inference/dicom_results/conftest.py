"""Real source images, an algorithm from the example manifest, findings, and the two DICOM validators.

Sources: the DX chest image (projection radiograph, no frame of reference), a CT slice (any modality), and
a multi-frame CT made from the three real CT slices by highdicom's legacy converter (the shared data has
no enhanced multi-frame image with plane positions; emri_small lacks its functional groups).
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from inference.dicom_results import Algorithm, FindingResult, build_seg
from inference.manifest import Code, Manifest

CONTENT_TIME = datetime(2025, 1, 2, 3, 4, 5)
EFFUSION_CODE = Code(value="60046008", scheme="SCT", meaning="Pleural effusion")


@pytest.fixture(autouse=True)
def _quiet_source_quirks() -> None:
    # The real CT slices name their patient "JANCT000" (one PN component); highdicom warns on every copy.
    warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")


@pytest.fixture(scope="session")
def dicom_dir(shared_data: Path) -> Path:
    return shared_data / "dicom"


@pytest.fixture
def dx_source(dicom_dir: Path) -> Dataset:
    return pydicom.dcmread(dicom_dir / "dx_chest" / "dx_image.dcm")


@pytest.fixture
def ct_source(dicom_dir: Path) -> Dataset:
    return pydicom.dcmread(dicom_dir / "ct_3slice" / "01.dcm")


@pytest.fixture
def multiframe_source(dicom_dir: Path) -> Dataset:
    slices = [pydicom.dcmread(path) for path in sorted((dicom_dir / "ct_3slice").glob("*.dcm"))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hd.legacy.LegacyConvertedEnhancedCTImage(
            slices,
            series_instance_uid=pydicom.uid.generate_uid(entropy_srcs=["multiframe series"]),
            series_number=99,
            sop_instance_uid=pydicom.uid.generate_uid(entropy_srcs=["multiframe instance"]),
            instance_number=1,
        )


@pytest.fixture
def sources(dx_source: Dataset, ct_source: Dataset, multiframe_source: Dataset) -> dict[str, Dataset]:
    return {"dx": dx_source, "ct": ct_source, "multiframe": multiframe_source}


FRAMES = {"dx": None, "ct": None, "multiframe": 2}  # the frame the model read (DICOM numbering, from 1)


@pytest.fixture
def algorithm(manifest_data: dict[str, Any]) -> Algorithm:
    return Algorithm.of(Manifest.model_validate(manifest_data))


def gradient(source: Dataset, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """A heatmap that differs in every pixel, so that a transposed or shifted grid cannot pass."""
    rows, columns = int(source.Rows), int(source.Columns)
    return np.linspace(low, high, rows * columns, dtype=np.float32).reshape(rows, columns)


def example_findings(source: Dataset) -> list[FindingResult]:
    """A coded positive finding with two boxes and a heatmap, a private-coded negative one with a heatmap
    and no box, and one with neither."""
    columns, rows = float(source.Columns), float(source.Rows)
    return [
        FindingResult(
            label="Effusion",
            display_name="Pleural effusion",
            code=EFFUSION_CODE,
            probability=0.8125,
            threshold=0.4,
            positive=True,
            boxes=[(1.5, 2.25, columns / 2, rows / 3), (10.0, 20.0, 30.5, 40.75)],
            heatmap=gradient(source),
        ),
        FindingResult(
            label="Pneumothorax",
            display_name="Pneumothorax",
            code=None,
            probability=0.125,
            threshold=0.3,
            positive=False,
            boxes=[],
            heatmap=np.flipud(gradient(source, 0.0, 0.5)).copy(),
        ),
        FindingResult(
            label="Cardiomegaly",
            display_name="Cardiomegaly",
            code=None,
            probability=0.5,
            threshold=0.5,
            positive=True,
            boxes=[],
            heatmap=None,
        ),
    ]


@pytest.fixture
def uids() -> Callable[[str], str]:
    """Deterministic UIDs per name, as the pipeline makes them: the same job gets the same UIDs."""
    return lambda name: pydicom.uid.generate_uid(entropy_srcs=["dicom results test", name])


def make_seg(
    source: Dataset,
    findings: list[FindingResult],
    algorithm: Algorithm,
    uids: Callable[[str], str],
    frame: int | None = None,
) -> Dataset | None:
    """The SEG as the pipeline makes it, with fixed UIDs and time."""
    return build_seg(
        source,
        findings,
        algorithm,
        sop_instance_uid=uids("seg"),
        series_instance_uid=uids("seg series"),
        frame=frame,
        content_datetime=CONTENT_TIME,
    )


def write(dataset: Dataset, path: Path) -> Path:
    dataset.save_as(path, enforce_file_format=True)
    return path


def algorithm_equipment(dataset: Dataset, algorithm: Algorithm) -> Dataset:
    """The algorithm's Contributing Equipment item; highdicom adds the source's and its own beside it."""
    (item,) = [
        item
        for item in dataset.ContributingEquipmentSequence
        if item.get("DeviceUID") == algorithm.device_uid
    ]
    return item


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed (the Makefile installs dcmtk and dicom3tools)"
    return found


def dciodvfy_errors(path: Path) -> list[str]:
    """dicom3tools' IOD check: the lines that report an error (warnings are allowed)."""
    run = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    assert any(line.strip() for line in lines), "dciodvfy printed nothing"
    return [line for line in lines if line.startswith("Error")]


def dsrdump(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("dsrdump"), str(path)], capture_output=True, text=True, check=False)
