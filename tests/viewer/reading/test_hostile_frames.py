"""Hostile stored files on the frame paths: a header that claims more than its file holds is refused (422,
"this file cannot be decoded") before anything is allocated, never a 500, never a 502 that blames the
archive, never gigabytes of memory. The files are stored straight into Orthanc, as a modality would send
them (C-STORE), not through the platform's upload, which refuses most of them."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.encaps import encapsulate, generate_frames

from orthanc import OrthancConnection
from tests.viewer.viewport_files import relabelled, store
from viewer.reading.frame_encoding import EXPLICIT_LE, FrameError, Undecodable, frames_of_file

LE_ACCEPT = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}'


def _frame_url(ds: pydicom.Dataset, frames: str = "1") -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/{frames}"
    )


def _stored(orthanc: OrthancConnection, ds: pydicom.Dataset) -> pydicom.Dataset:
    store(orthanc, [ds])
    return ds


def _orthanc_is_up(orthanc: OrthancConnection) -> bool:
    with orthanc.client(timeout=5) as client:
        return client.get("/system").status_code == 200


def _refused_as_undecodable(response: object) -> None:
    assert response.status_code == 422, response.text  # type: ignore[attr-defined]
    assert "this file cannot be decoded" in response.json()["detail"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("claimed", [3_000_000, 2_147_483_647])
def test_series_bulk_data_does_not_trust_a_claimed_number_of_frames(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path, claimed: int
) -> None:
    """A single CT slice whose header claims millions of frames: the series answer still comes, without
    the slice (its file holds one frame), in bounded memory."""
    ds = relabelled(shared_data / "dicom" / "ct_3slice" / "01.dcm", f"hostile frames {claimed}")
    ds.NumberOfFrames = claimed
    _stored(orthanc, ds)
    url = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    tracemalloc.start()
    try:
        response = radiologist.get(url, headers={"Accept": LE_ACCEPT})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200
    assert b"Content-Location" not in response.content  # the slice left out: its frames are not in its file
    assert peak < 32 * 1024 * 1024, f"the request allocated {peak / 1e6:.0f} MB at its peak"


@pytest.mark.parametrize("side", [4096, 65535])
def test_an_rle_frame_claiming_more_pixels_than_it_can_hold_is_422(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path, side: int
) -> None:
    """6 KB of RLE cannot decode to side x side 16-bit pixels (PackBits expands at most 64 times)."""
    path = shared_data / "dicom" / "transfer_syntax" / "pydicom_MR_small_RLE.dcm"
    ds = relabelled(path, f"rle side {side}")
    ds.Rows = ds.Columns = side
    _stored(orthanc, ds)
    tracemalloc.start()
    try:
        response = radiologist.get(_frame_url(ds), headers={"Accept": LE_ACCEPT})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _refused_as_undecodable(response)
    assert peak < 32 * 1024 * 1024
    assert _orthanc_is_up(orthanc)


def test_a_frame_over_the_decode_cap_is_422_before_decoding(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    """A JPEG 2000 frame whose header claims 65535 x 65535 pixels: over OPENAIM_VIEWER_MAX_FRAME_MB."""
    path = shared_data / "dicom" / "transfer_syntax" / "pydicom_MR_small_jp2klossless.dcm"
    ds = relabelled(path, "j2k claims 65535")
    ds.Rows = ds.Columns = 65535
    _stored(orthanc, ds)
    response = radiologist.get(_frame_url(ds), headers={"Accept": LE_ACCEPT})
    _refused_as_undecodable(response)
    assert "OPENAIM_VIEWER_MAX_FRAME_MB" in response.json()["detail"]


def test_a_decoder_panic_is_422_not_a_crash(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    """pylibjpeg-rle panics (pyo3_runtime.PanicException, a BaseException) on this segment's first byte."""
    ds = relabelled(shared_data / "dicom" / "transfer_syntax" / "pydicom_MR_small_RLE.dcm", "rle panic")
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    frame[64] = 0x81  # the first byte of the first segment: a replicate run that overruns the row
    ds.PixelData = encapsulate([bytes(frame)])
    _stored(orthanc, ds)
    _refused_as_undecodable(radiologist.get(_frame_url(ds), headers={"Accept": LE_ACCEPT}))


def test_corrupt_jpeg_2000_is_422_not_502(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    """The file is at fault, not the archive: 502 would send an admin to look at Orthanc."""
    path = shared_data / "dicom" / "transfer_syntax" / "pydicom_MR_small_jp2klossless.dcm"
    ds = relabelled(path, "j2k corrupt")
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:40] + bytes(len(frame) - 40)])  # header kept, codestream zeroed
    _stored(orthanc, ds)
    _refused_as_undecodable(radiologist.get(_frame_url(ds), headers={"Accept": LE_ACCEPT}))
    assert _orthanc_is_up(orthanc)


def test_a_big_endian_file_without_rows_is_422(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    path = shared_data / "dicom" / "transfer_syntax" / "emri_small_big_endian.dcm"
    ds = relabelled(path, "big endian without rows")
    del ds.Rows
    _stored(orthanc, ds)
    _refused_as_undecodable(radiologist.get(_frame_url(ds), headers={"Accept": LE_ACCEPT}))


def test_a_file_claiming_more_frames_than_its_pixel_data_holds_is_undecodable(shared_data: Path) -> None:
    for name in ("emri_small.dcm", "emri_small_RLE.dcm"):
        ds = pydicom.dcmread(shared_data / "dicom" / "transfer_syntax" / name)
        ds.NumberOfFrames = 2_147_483_647
        buffer = io.BytesIO()
        ds.save_as(buffer)
        with pytest.raises(FrameError) as refused:  # before any allocation: well inside a second
            frames_of_file(buffer.getvalue(), largest=None, max_frame_bytes=1 << 20)
        assert isinstance(refused.value, Undecodable), refused.value
        assert "2147483647 frames" in str(refused.value)


def test_a_series_whose_only_header_is_unusable_is_422_not_500(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    """Number of Frames with two values: no frame count, no frames; the description says so."""
    ds = relabelled(shared_data / "dicom" / "ct_3slice" / "02.dcm", "two frame counts")
    ds.NumberOfFrames = ["1", "2"]
    _stored(orthanc, ds)
    images = f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/images"
    for url in (images, f"{images}?first=true"):
        response = radiologist.get(url)
        assert response.status_code == 422, response.text
        assert "cannot be decoded" in response.json()["detail"]
