"""Frames through the platform: right pixels for every encoding (JPEG 2000 decoded here, so Orthanc
survives), served from a bounded cache, and never an Orthanc transcoding that could crash it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from orthanc import OrthancConnection
from tests.viewer.viewport_files import frame_parts, relabelled, served_pixels, store
from viewer.archive.client import Archive, ArchiveError
from viewer.reading import frames as frames_module
from viewer.reading.bytes_lru import BytesLRU
from viewer.reading.dicomweb import frames_answer
from viewer.reading.frame_encoding import EXPLICIT_LE, FrameError, frames_of_file
from viewer.reading.frames import FrameSource

LE_ACCEPT = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}'
ENCODINGS = [
    "MR2_J2KR.dcm",  # JPEG 2000 lossless: Orthanc 1.10 + GDCM crashes transcoding it
    "pydicom_MR_small_jp2klossless.dcm",  # the same, signed 16-bit
    "US1_J2KR.dcm",  # JPEG 2000, YBR_RCT colour
    "emri_small_jpeg_2k_lossless.dcm",  # JPEG 2000, multi-frame
    "emri_small.dcm",
    "emri_small_big_endian.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "pydicom_MR_small_implicit.dcm",
    "pydicom_CT_small.dcm",
    "JPEG-LL.dcm",
    "pydicom_SC_rgb_rle.dcm",
    "pydicom_SC_rgb_jpeg_dcmtk.dcm",  # YBR_FULL: served as RGB
]


@pytest.fixture(scope="module")
def stored(orthanc: OrthancConnection, shared_data: Path) -> dict[str, pydicom.Dataset]:
    folder = shared_data / "dicom" / "transfer_syntax"
    files = {
        name: relabelled(folder / name, f"frames {name}") for name in [*ENCODINGS, "pydicom_JPEG-lossy.dcm"]
    }
    store(orthanc, list(files.values()))
    return files


def _frame_url(ds: pydicom.Dataset, frames: str = "1") -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/{frames}"
    )


def _orthanc_is_up(orthanc: OrthancConnection) -> bool:
    with orthanc.client(timeout=5) as client:
        return client.get("/system").status_code == 200


def _as_array(data: bytes, ds: pydicom.Dataset, frame: int = 1) -> np.ndarray:
    expected = served_pixels(ds, frame)
    return np.frombuffer(data, dtype=expected.dtype.newbyteorder("<")).reshape(expected.shape)


@pytest.mark.parametrize("name", ENCODINGS)
def test_frame_as_explicit_little_endian_equals_pydicom(
    radiologist: TestClient, stored: dict[str, pydicom.Dataset], orthanc: OrthancConnection, name: str
) -> None:
    ds = stored[name]
    frames = int(ds.get("NumberOfFrames") or 1)
    response = radiologist.get(_frame_url(ds, "1"), headers={"Accept": LE_ACCEPT})
    assert response.status_code == 200, response.text
    assert f"transfer-syntax={EXPLICIT_LE}" in response.headers["content-type"]
    (data,) = frame_parts(response)
    assert np.array_equal(_as_array(data, ds), served_pixels(ds, 1))
    if frames > 1:
        last = frame_parts(radiologist.get(_frame_url(ds, str(frames)), headers={"Accept": LE_ACCEPT}))[0]
        assert np.array_equal(_as_array(last, ds, frames), served_pixels(ds, frames))
    assert _orthanc_is_up(orthanc), f"Orthanc died serving {name}"


def test_jpeg_2000_frame_leaves_orthanc_alive_and_is_right(
    radiologist: TestClient, stored: dict[str, pydicom.Dataset], orthanc: OrthancConnection
) -> None:
    """Asking Orthanc itself for this frame in Explicit VR LE crashes it within a request or two."""
    ds = stored["MR2_J2KR.dcm"]
    radiologist.app.state.settings.viewer_frame_cache_mb = 0  # no cache: every request goes to Orthanc
    for _ in range(3):
        response = radiologist.get(_frame_url(ds), headers={"Accept": LE_ACCEPT})
        assert response.status_code == 200
        assert np.array_equal(_as_array(frame_parts(response)[0], ds), ds.pixel_array)
        assert _orthanc_is_up(orthanc)


def test_a_codec_pydicom_lacks_is_transcoded_by_orthanc(
    radiologist: TestClient, stored: dict[str, pydicom.Dataset]
) -> None:
    ds = stored["pydicom_JPEG-lossy.dcm"]  # 12-bit JPEG extended
    response = radiologist.get(_frame_url(ds), headers={"Accept": LE_ACCEPT})
    assert response.status_code == 200
    (data,) = frame_parts(response)
    assert len(data) == ds.Rows * ds.Columns * 2
    pixels = np.frombuffer(data, dtype="<u2")
    assert 0 < pixels.max() < 4096  # 12 bits stored, and not a blank frame


def test_several_frames_in_one_request_come_in_order(
    radiologist: TestClient, stored: dict[str, pydicom.Dataset]
) -> None:
    ds = stored["emri_small_RLE.dcm"]
    parts = frame_parts(radiologist.get(_frame_url(ds, "3,1,10"), headers={"Accept": LE_ACCEPT}))
    for data, number in zip(parts, (3, 1, 10), strict=True):
        assert np.array_equal(np.frombuffer(data, dtype="<u2").reshape(64, 64), ds.pixel_array[number - 1])


def test_a_cached_frame_does_not_reach_orthanc(
    radiologist: TestClient, stored: dict[str, pydicom.Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = stored["pydicom_CT_small.dcm"]
    first = radiologist.get(_frame_url(ds), headers={"Accept": LE_ACCEPT})
    archive = radiologist.app.state.archive
    calls: list[object] = []

    async def spy(*args: object, **kwargs: object) -> object:
        calls.append(args)
        raise AssertionError("the cached frame went to Orthanc")

    monkeypatch.setattr(archive, "fetch_frames", spy)
    again = radiologist.get(_frame_url(ds), headers={"Accept": LE_ACCEPT})
    assert again.status_code == 200 and calls == []
    assert frame_parts(again) == frame_parts(first)
    assert again.headers["cache-control"] == "private, max-age=3600"


def test_as_stored_passes_through_and_other_syntaxes_are_refused(
    radiologist: TestClient, stored: dict[str, pydicom.Dataset], orthanc: OrthancConnection
) -> None:
    ds = stored["MR2_J2KR.dcm"]
    as_stored = radiologist.get(
        _frame_url(ds),
        headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'},
    )
    assert as_stored.status_code == 200
    assert "1.2.840.10008.1.2.4.90" in as_stored.headers["content-type"]  # the JPEG 2000 codestream
    refused = radiologist.get(
        _frame_url(ds),
        headers={"Accept": 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50'},
    )
    assert refused.status_code == 406
    assert _orthanc_is_up(orthanc)


def test_a_whole_series_comes_as_bulk_data_in_one_answer(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    """PS3.18 series bulk data: every frame, in display order, each part naming its frame."""
    ct = sorted(  # display order: ascending along the slice normal, here z (axial), against the numbers
        (pydicom.dcmread(path) for path in (shared_data / "dicom" / "ct_3slice").glob("*.dcm")),
        key=lambda ds: float(ds.ImagePositionPatient[2]),
    )
    store(orthanc, ct)
    url = f"/dicomweb/studies/{ct[0].StudyInstanceUID}/series/{ct[0].SeriesInstanceUID}"
    radiologist.get(f"/api/studies/{ct[0].StudyInstanceUID}/series/{ct[0].SeriesInstanceUID}/images")
    response = radiologist.get(url, headers={"Accept": LE_ACCEPT})
    assert response.status_code == 200, response.text
    parts = re.findall(rb"Content-Location: (\S+)\r\n\r\n(.*?)\r\n--", response.content, flags=re.S)
    assert [location.decode() for location, _ in parts] == [
        f"{url}/instances/{ds.SOPInstanceUID}/frames/1" for ds in ct
    ]
    for (_, data), ds in zip(parts, ct, strict=True):
        assert np.array_equal(_as_array(data, ds), served_pixels(ds, 1))
    assert radiologist.get(url, headers={"Accept": "application/dicom"}).status_code == 406
    unknown = url.rsplit("/", 1)[0] + "/1.2.3.4.5.6.7.8"
    assert radiologist.get(unknown, headers={"Accept": LE_ACCEPT}).status_code == 404


def test_unknown_instance_is_404(radiologist: TestClient, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["emri_small.dcm"]
    url = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/1.2.3.4/frames/1"
    assert radiologist.get(url, headers={"Accept": LE_ACCEPT}).status_code == 404


@pytest.mark.parametrize(
    ("accept", "answer"),
    [
        (LE_ACCEPT, EXPLICIT_LE),
        ('multipart/related; type="application/octet-stream"', EXPLICIT_LE),
        ("*/*", EXPLICIT_LE),
        ('multipart/related; type="application/octet-stream"; transfer-syntax=*', "*"),
        ('multipart/related; type="image/jp2"', None),
        ('multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.90', None),
    ],
)
def test_which_accept_headers_the_platform_answers(accept: str, answer: str | None) -> None:
    assert frames_answer(accept) == answer


def test_cache_is_bounded_in_bytes_and_evicts_the_least_recently_used() -> None:
    cache: BytesLRU[tuple[str, int]] = BytesLRU(max_bytes=25)
    cache.put(("a", 1), b"x" * 10)
    cache.put(("a", 2), b"y" * 10)
    assert cache.get(("a", 1)) == b"x" * 10  # now the most recently used
    cache.put(("a", 3), b"z" * 10)
    assert ("a", 2) not in cache and ("a", 1) in cache and ("a", 3) in cache
    assert cache.nbytes == 20
    cache.put(("b", 1), b"w" * 30)  # larger than the whole cache: not kept, nothing evicted
    assert ("b", 1) not in cache and len(cache) == 2


@pytest.mark.parametrize("name", ENCODINGS)
def test_a_whole_file_gives_every_frame_as_the_frames_route_serves_it(shared_data: Path, name: str) -> None:
    path = shared_data / "dicom" / "transfer_syntax" / name
    ds = pydicom.dcmread(path)
    instance_uid, frames, header = frames_of_file(path.read_bytes())
    assert instance_uid == ds.SOPInstanceUID == header.SOPInstanceUID
    assert header.Rows == ds.Rows and "PixelData" not in header  # what the description needs, no pixels
    assert len(frames) == int(ds.get("NumberOfFrames") or 1)
    for number, data in enumerate(frames, start=1):
        assert np.array_equal(_as_array(data, ds, number), served_pixels(ds, number))


def _ct_series(orthanc: OrthancConnection, shared_data: Path, label: str) -> list[pydicom.Dataset]:
    """The three real CT slices as one new series, stored."""
    paths = sorted((shared_data / "dicom" / "ct_3slice").glob("*"))
    slices = [relabelled(path, f"{label} {path.name}") for path in paths]
    for ds in slices:
        ds.SeriesInstanceUID, ds.StudyInstanceUID = slices[0].SeriesInstanceUID, slices[0].StudyInstanceUID
    store(orthanc, slices)
    return slices


def _wait_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_missed_frame_brings_the_rest_of_its_series(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    slices = _ct_series(orthanc, shared_data, "read ahead")
    response = radiologist.get(_frame_url(slices[0]), headers={"Accept": LE_ACCEPT})
    assert response.status_code == 200
    cache = radiologist.app.state.frame_source.cache
    _wait_until(
        lambda: all((str(ds.SOPInstanceUID), 1) in cache for ds in slices),
        "the other slices of the series were not loaded",
    )
    for ds in slices[1:]:  # served from what the series answer brought
        again = frame_parts(radiologist.get(_frame_url(ds), headers={"Accept": LE_ACCEPT}))[0]
        assert again == cache.get((str(ds.SOPInstanceUID), 1))
        assert np.array_equal(_as_array(again, ds), served_pixels(ds))


def test_a_file_whose_frames_would_decode_past_the_budget_is_refused(shared_data: Path) -> None:
    data = (shared_data / "dicom" / "transfer_syntax" / "emri_small_jpeg_2k_lossless.dcm").read_bytes()
    frames = frames_of_file(data).frames
    whole = sum(len(frame) for frame in frames)
    assert frames_of_file(data, whole)[1] == frames  # exactly the budget: decoded
    with pytest.raises(FrameError, match="more than"):
        frames_of_file(data, whole - 1)


def test_a_series_load_cut_by_an_outage_is_tried_again(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slices = _ct_series(orthanc, shared_data, "outage")
    archive = radiologist.app.state.archive
    real = archive.series_files

    def down(*args: object) -> object:
        raise ArchiveError("Orthanc is unreachable: ConnectError")

    monkeypatch.setattr(archive, "series_files", down)
    assert radiologist.get(_frame_url(slices[0]), headers={"Accept": LE_ACCEPT}).status_code == 200
    source = radiologist.app.state.frame_source
    _wait_until(lambda: not source._series, "the failed series load did not end")
    monkeypatch.setattr(archive, "series_files", real)
    assert radiologist.get(_frame_url(slices[1]), headers={"Accept": LE_ACCEPT}).status_code == 200
    last = (str(slices[2].SOPInstanceUID), 1)
    _wait_until(lambda: last in source.cache, "the series was not loaded once Orthanc was back")


def test_kept_headers_are_bounded_by_files_not_series(monkeypatch: pytest.MonkeyPatch) -> None:
    """One series of thousands of slices must not keep thousands of headers per series remembered."""
    monkeypatch.setattr(frames_module, "HEADERS_KEPT", 5)
    source = FrameSource(Archive(OrthancConnection(url="http://127.0.0.1:1", username="u", password="p")), 0)
    source._keep_headers("a", {str(n): pydicom.Dataset() for n in range(3)})
    source._keep_headers("b", {str(n): pydicom.Dataset() for n in range(3)})  # 6 > 5: "a" goes
    assert list(source._headers) == ["b"]
    source._keep_headers("huge", {str(n): pydicom.Dataset() for n in range(6)})  # alone over the bound
    assert list(source._headers) == []
