"""Hostile uploads are refused (4xx with the reason) before Orthanc sees them: sequences nested too deep,
lengths that run past the file, a transfer syntax unknown or absent, compressed frames whose own headers
contradict the file. Orthanc 1.10 segfaults on some of these, so these tests never let one reach it: the
archive's store call is replaced by a recorder, which must stay empty."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from viewer.archive.dicom_structure import MAX_SEQUENCE_DEPTH, MalformedDicom, check_structure
from viewer.archive.stow import UploadError, check_dicom

Forwarded = list[bytes]


@pytest.fixture
def forwarded(admin: TestClient, monkeypatch: pytest.MonkeyPatch) -> Forwarded:
    """What the upload route would hand to Orthanc; nothing is stored."""
    sent: Forwarded = []

    async def record(data: bytes) -> object:
        sent.append(data)
        raise AssertionError("a hostile file reached the archive")

    monkeypatch.setattr(admin.app.state.archive, "store_instance", record)
    return sent


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _fresh(path: Path) -> Dataset:
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _nested(ds: Dataset, depth: int) -> Dataset:
    """``depth`` Content Sequences, one inside the other."""
    inner = Dataset()
    inner.TextValue = "deepest"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    return ds


def _upload(admin: TestClient, data: bytes) -> tuple[int, str]:
    response = admin.post("/dicomweb/studies", content=data, headers={"Content-Type": "application/dicom"})
    return response.status_code, str(response.json().get("detail", ""))


def _refused(admin: TestClient, forwarded: Forwarded, data: bytes, reason: str) -> None:
    status, detail = _upload(admin, data)
    assert status in (400, 422), (status, detail)
    assert reason in detail, detail
    assert forwarded == []


def test_a_sequence_nested_50_deep_is_refused(
    admin: TestClient, forwarded: Forwarded, shared_data: Path
) -> None:
    data = _bytes(_nested(_fresh(shared_data / "dicom" / "dx_chest" / "dx_image.dcm"), 50))
    assert len(data) < 64 * 1024  # a small, well-formed file: what crashed Orthanc 1.10
    _refused(admin, forwarded, data, f"sequences nest more than {MAX_SEQUENCE_DEPTH} deep")


def test_nesting_up_to_the_cap_is_read(shared_data: Path) -> None:
    ds = _nested(_fresh(shared_data / "dicom" / "dx_chest" / "dx_image.dcm"), MAX_SEQUENCE_DEPTH)
    check_structure(_bytes(ds))
    with pytest.raises(MalformedDicom, match="nest"):
        check_structure(_bytes(_nested(ds, MAX_SEQUENCE_DEPTH + 1)))


def _with_tail(data: bytes, element: bytes) -> bytes:
    return data + element


def test_an_element_longer_than_the_file_is_refused(
    admin: TestClient, forwarded: Forwarded, shared_data: Path
) -> None:
    """A private OB element at the end declares a megabyte and holds ten bytes (pydicom reads it short)."""
    ds = _fresh(shared_data / "dicom" / "dx_chest" / "dx_image.dcm")
    del ds.PixelData  # so that the private element is the last one
    tail = struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, 1_000_000) + b"0123456789"
    _refused(admin, forwarded, _bytes(ds) + tail, "declares 1000000 bytes")


def test_an_item_longer_than_its_sequence_is_refused(shared_data: Path) -> None:
    ds = _fresh(shared_data / "dicom" / "dx_chest" / "dx_image.dcm")
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3"
    data = bytearray(_bytes(ds))
    item = data.index(b"\xfe\xff\x00\xe0", data.index(b"\x08\x00\x40\x11"))  # the sequence's item
    data[item + 4 : item + 8] = struct.pack("<L", 0x7FFFFFFF)
    with pytest.raises(MalformedDicom, match="item declares"):
        check_structure(bytes(data))


@pytest.mark.parametrize(
    ("syntax", "reason"), [("1.2.3.4", "unknown transfer syntax"), (None, "no transfer syntax")]
)
def test_an_unknown_or_absent_transfer_syntax_is_refused(
    admin: TestClient, forwarded: Forwarded, shared_data: Path, syntax: str | None, reason: str
) -> None:
    ds = _fresh(shared_data / "dicom" / "dx_chest" / "dx_image.dcm")
    data = _bytes(ds)
    named = ds.file_meta.TransferSyntaxUID.encode() + b"\x00" * (len(ds.file_meta.TransferSyntaxUID) % 2)
    element = struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(named)) + named
    if syntax is None:
        replaced = data.replace(element, struct.pack("<HH2sH", 0x0002, 0x0011, b"UI", len(named)) + named, 1)
    else:
        padded = syntax.encode().ljust(len(named), b"\x00")
        replaced = data.replace(element, element[:8] + padded, 1)
    assert replaced != data
    _refused(admin, forwarded, replaced, reason)


def _jpeg(shared_data: Path, edit: Callable[[bytearray], None]) -> bytes:
    ds = _fresh(shared_data / "dicom" / "transfer_syntax" / "pydicom_SC_rgb_jpeg_dcmtk.dcm")
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    edit(frame)
    ds.PixelData = encapsulate([bytes(frame)])
    return _bytes(ds)


def test_a_jpeg_frame_without_soi_is_refused(
    admin: TestClient, forwarded: Forwarded, shared_data: Path
) -> None:
    def flip_soi(frame: bytearray) -> None:
        frame[1] ^= 0xFF

    _refused(admin, forwarded, _jpeg(shared_data, flip_soi), "does not start with SOI")


def test_a_jpeg_frame_whose_size_contradicts_the_header_is_refused(
    admin: TestClient, forwarded: Forwarded, shared_data: Path
) -> None:
    def widen(frame: bytearray) -> None:
        sof = frame.index(b"\xff\xc0")
        frame[sof + 7 : sof + 9] = struct.pack(">H", 65535)

    _refused(admin, forwarded, _jpeg(shared_data, widen), "65535 x")


def test_a_jpeg_marker_segment_past_its_frame_is_refused(
    admin: TestClient, forwarded: Forwarded, shared_data: Path
) -> None:
    def stretch(frame: bytearray) -> None:
        dqt = frame.index(b"\xff\xdb")
        frame[dqt + 2 : dqt + 4] = b"\xff\xf0"

    _refused(admin, forwarded, _jpeg(shared_data, stretch), "runs past its frame")


def test_an_rle_file_claiming_65535_squared_is_refused(
    admin: TestClient, forwarded: Forwarded, shared_data: Path
) -> None:
    ds = _fresh(shared_data / "dicom" / "transfer_syntax" / "pydicom_MR_small_RLE.dcm")
    ds.Rows = ds.Columns = 65535
    _refused(admin, forwarded, _bytes(ds), "too short to decode to 65535 x 65535")


def test_more_frames_than_fragments_is_refused(
    admin: TestClient, forwarded: Forwarded, shared_data: Path
) -> None:
    ds = _fresh(shared_data / "dicom" / "transfer_syntax" / "pydicom_MR_small_RLE.dcm")
    ds.NumberOfFrames = 2_147_483_647
    status, detail = _upload(admin, _bytes(ds))
    assert status == 400 and "2147483647 frames" in detail and forwarded == []


def test_every_real_fixture_passes_the_checks(shared_data: Path) -> None:
    for path in sorted((shared_data / "dicom").rglob("*.dcm")):
        try:
            check_dicom(path.name, path.read_bytes())
        except UploadError as error:
            pytest.fail(f"{path.name} refused: {error}")
