"""Real DICOM fixtures stored in the test Orthanc under fresh UIDs, one series per file, so that files
sharing a SOP Instance UID (one image in several transfer syntaxes) are all stored."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.uid import generate_uid

from orthanc import OrthancConnection


def relabelled(path: Path, label: str) -> Dataset:
    """The file under UIDs derived from ``label`` (the same label, the same UIDs)."""
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["openaim viewport test", label, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["openaim viewport test", label, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["openaim viewport test", label, "instance"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def store(orthanc: OrthancConnection, datasets: list[Dataset]) -> None:
    with orthanc.client() as client:
        for ds in datasets:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            client.post("/instances", content=buffer.getvalue()).raise_for_status()


def served_pixels(ds: Dataset, frame: int = 1) -> np.ndarray:
    """What the platform serves for a frame: pydicom's pixel_array (YBR as RGB), colour-by-plane
    when the file says so."""
    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames") or 1) > 1:
        pixels = pixels[frame - 1]
    if int(ds.get("SamplesPerPixel") or 1) > 1 and int(ds.get("PlanarConfiguration") or 0) == 1:
        pixels = np.moveaxis(pixels, -1, 0)
    return pixels


def frame_parts(response: httpx.Response) -> list[bytes]:
    """The bodies of a multipart/related frames answer."""
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    chunks = response.content.split(f"--{boundary}".encode())[1:-1]
    return [chunk.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for chunk in chunks]
