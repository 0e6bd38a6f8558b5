"""Pictures the platform draws itself: a thumbnail is the image a reader sees (the file's window),
whatever its encoding, JPEG 2000 included, without Orthanc decoding anything."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inference.runtime.pixels import display_frame
from orthanc import OrthancConnection
from tests.viewer.viewport_files import relabelled, store


@pytest.mark.parametrize(
    "path",
    [
        "transfer_syntax/MR2_J2KR.dcm",  # JPEG 2000: Orthanc + GDCM crashed transcoding it
        "dx_chest/dx_image.dcm",  # MONOCHROME1 with a window
        "foreign_ai/referenced_ct_16x16/17106.dcm",  # 16 x 16: too small for a model, fine for people
    ],
)
def test_thumbnail_is_the_image_a_reader_sees(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path, path: str
) -> None:
    ds = relabelled(shared_data / "dicom" / path, f"thumbnail {path}")
    store(orthanc, [ds])
    url = (
        f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/thumbnail.png"
    )
    response = radiologist.get(url, params={"size": 512})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "private, max-age=86400, immutable"  # it never changes
    shown = np.asarray(Image.open(io.BytesIO(response.content)))
    expected = display_frame(pydicom.dcmread(io.BytesIO(_bytes(ds))), min_side=1)
    if max(expected.shape) <= 512:  # not scaled down: the very pixels
        assert np.array_equal(shown, expected)
    else:
        assert max(shown.shape) == 512
    with orthanc.client() as client:
        assert client.get("/system").status_code == 200


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_thumbnail_of_a_non_image_is_404_and_size_is_bounded(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    sr = relabelled(shared_data / "dicom" / "foreign_ai" / "highdicom" / "sr_document.dcm", "thumbnail sr")
    store(orthanc, [sr])
    url = f"/api/studies/{sr.StudyInstanceUID}/series/{sr.SeriesInstanceUID}/instances/{sr.SOPInstanceUID}"
    assert radiologist.get(f"{url}/thumbnail.png").status_code == 404
    assert radiologist.get(f"{url}/thumbnail.png", params={"size": 4096}).status_code == 422


def test_a_drawn_thumbnail_is_kept_and_still_needs_a_reader(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    ds = relabelled(shared_data / "dicom" / "dx_chest" / "dx_image.dcm", "thumbnail kept")
    store(orthanc, [ds])
    url = (
        f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/thumbnail.png"
    )
    drawn = radiologist.get(url)
    assert drawn.status_code == 200
    with orthanc.client() as client:  # gone from the archive: only a kept thumbnail can answer now
        orthanc_id = client.post("/tools/lookup", content=str(ds.SOPInstanceUID)).json()[0]["ID"]
        client.delete(f"/instances/{orthanc_id}").raise_for_status()
    again = radiologist.get(url)
    assert again.status_code == 200 and again.content == drawn.content
    assert radiologist.get(url, params={"size": 64}).status_code == 404  # another size is drawn anew
    radiologist.cookies.clear()
    assert radiologist.get(url, follow_redirects=False).status_code in (303, 401)
