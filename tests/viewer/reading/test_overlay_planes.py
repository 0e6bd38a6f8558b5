"""Overlay planes (60xx) stored in Orthanc are described per instance and served as PNGs the viewport lays
over the image: the origin applied, white where set, transparent elsewhere, per frame for multi-frame."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.pixels.utils import pack_bits

from orthanc import OrthancConnection
from tests.viewer.viewport_files import relabelled, store

MR = "dicom/transfer_syntax/pydicom_MR_small.dcm"  # 64 x 64, one frame
MULTI_FRAME_MR = "dicom/transfer_syntax/emri_small.dcm"  # 64 x 64, 10 frames


def add_plane(
    ds: pydicom.Dataset, group: int, bits: np.ndarray, origin: tuple[int, int], first: int = 1
) -> None:
    """An overlay plane as a modality writes it: 1-bit packed, origin 1-based (row, column)."""
    frames, rows, columns = bits.shape if bits.ndim == 3 else (1, *bits.shape)
    ds.add_new((group, 0x0010), "US", rows)
    ds.add_new((group, 0x0011), "US", columns)
    ds.add_new((group, 0x0022), "LO", "lesion outline")
    ds.add_new((group, 0x0040), "CS", "G")
    ds.add_new((group, 0x0050), "SS", list(origin))
    ds.add_new((group, 0x0100), "US", 1)
    ds.add_new((group, 0x0102), "US", 0)
    if frames > 1:
        ds.add_new((group, 0x0015), "IS", str(frames))
        ds.add_new((group, 0x0051), "US", first)
    ds.add_new((group, 0x3000), "OW", pack_bits(bits.astype(np.uint8).ravel(), pad=True))


def _png(client: TestClient, ds: pydicom.Dataset, group: str, frame: int) -> np.ndarray:
    url = (
        f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/overlays/{group}/{frame}.png"
    )
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_a_single_frame_plane_is_described_and_drawn_at_its_origin(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    ds = relabelled(shared_data / MR, "overlay single frame")
    bits = np.zeros((10, 16), dtype=np.uint8)
    bits[0, :] = bits[-1, :] = bits[:, 0] = bits[:, -1] = 1  # a box outline
    add_plane(ds, 0x6002, bits, origin=(5, 60))  # runs past the right edge: clipped
    store(orthanc, [ds])

    described = radiologist.get(
        f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/overlay-planes"
    )
    assert described.status_code == 200, described.text
    [plane] = described.json()[ds.SOPInstanceUID]
    assert plane == {
        "group": "6002",
        "type": "G",
        "description": "lesion outline",
        "label": "",
        "frames": [1],
    }

    rgba = _png(radiologist, ds, "6002", 1)
    assert rgba.shape == (64, 64, 4)
    expected = np.zeros((64, 64), dtype=bool)
    expected[4:14, 59:64] = bits[:, :5] != 0
    assert np.array_equal(rgba[..., 3] == 255, expected)
    assert (rgba[expected][:, :3] == 255).all()  # white
    assert (rgba[~expected][:, 3] == 0).all()  # transparent elsewhere


def test_a_multi_frame_plane_covers_its_frames_only(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    ds = relabelled(shared_data / MULTI_FRAME_MR, "overlay multi frame")
    bits = np.zeros((2, 8, 8), dtype=np.uint8)
    bits[0, 2, 3] = 1
    bits[1, 6, 1] = 1
    add_plane(ds, 0x6000, bits, origin=(1, 1), first=4)  # image frames 4 and 5
    store(orthanc, [ds])

    described = radiologist.get(
        f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/overlay-planes"
    ).json()
    assert [plane["frames"] for plane in described[ds.SOPInstanceUID]] == [[4, 5]]

    assert list(zip(*np.nonzero(_png(radiologist, ds, "6000", 4)[..., 3]), strict=True)) == [(2, 3)]
    assert list(zip(*np.nonzero(_png(radiologist, ds, "6000", 5)[..., 3]), strict=True)) == [(6, 1)]
    url = f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    assert radiologist.get(f"{url}/overlays/6000/3.png").status_code == 404  # not covered
    assert radiologist.get(f"{url}/overlays/6002/4.png").status_code == 404  # no such plane
    assert radiologist.get(f"{url}/overlays/6001/4.png").status_code == 422  # odd group: not an overlay


def test_an_image_without_planes_has_none(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    ds = relabelled(shared_data / MR, "overlay none")
    store(orthanc, [ds])
    described = radiologist.get(
        f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/overlay-planes"
    )
    assert described.status_code == 200
    assert described.json() == {}


@pytest.mark.parametrize(
    ("image_side", "plane_side", "data_bytes", "reason"),
    [
        (
            10_000,
            64,
            512,
            "the image claims 100000000 pixels",
        ),  # Rows/Columns edited; the pixels stay 64 x 64
        (64, 64, 100, "the overlay data holds 100 bytes; its size needs 512"),
    ],
)
def test_an_overlay_whose_header_claims_more_than_its_file_is_422(
    radiologist: TestClient,
    orthanc: OrthancConnection,
    shared_data: Path,
    image_side: int,
    plane_side: int,
    data_bytes: int,
    reason: str,
) -> None:
    """Refused from the header, before an RGBA image of the claimed size (400 MB here) is allocated."""
    ds = relabelled(shared_data / MR, f"overlay hostile {image_side} {data_bytes}")
    add_plane(ds, 0x6000, np.ones((plane_side, plane_side), dtype=np.uint8), (1, 1))
    ds[0x6000, 0x3000].value = ds[0x6000, 0x3000].value[:data_bytes]
    ds.Rows = ds.Columns = image_side
    store(orthanc, [ds])
    url = (
        f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/overlays/6000/1.png"
    )
    tracemalloc.start()
    try:
        response = radiologist.get(url)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 422, response.text
    assert reason in response.json()["detail"] and "cannot be decoded" in response.json()["detail"]
    assert peak < 32 * 1024 * 1024, f"{peak / 1e6:.0f} MB allocated"
