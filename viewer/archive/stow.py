"""Reading a STOW-RS upload: split multipart/related into files, and check that each is DICOM we can
store before anything is stored: its structure holds (declared lengths, sequence depth, a known transfer
syntax: ``dicom_structure``), it parses, it names its instance, its pixel data is complete, and its
compressed frames' own headers agree with it (``compressed_frames``). Orthanc 1.10 crashes on some hostile
files; it never sees one that fails these checks."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from email.message import Message
from io import BytesIO
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID

from openaim.uids import is_uid
from viewer.archive.compressed_frames import check_frame
from viewer.archive.dicom_structure import MalformedDicom, check_structure

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class UploadError(ValueError):
    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class UploadedFile:
    name: str
    data: bytes
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str


def read_upload(content_type: str, body: bytes) -> list[UploadedFile]:
    header = Message()
    header["content-type"] = content_type
    media_type = header.get_content_type()
    if media_type == "application/dicom":
        parts = [body]
    elif media_type == "multipart/related":
        boundary = header.get_param("boundary")
        if not isinstance(boundary, str) or not boundary:
            raise UploadError("multipart/related upload without a boundary")
        parts = split_multipart(body, boundary)
    else:
        raise UploadError(
            'Send DICOM as multipart/related; type="application/dicom" (STOW-RS) or as application/dicom.',
            status_code=415,
        )
    if not parts:
        raise UploadError("the upload holds no files")
    files = [check_dicom(f"part {number}", part) for number, part in enumerate(parts, start=1)]
    return files


def split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """The bodies of the parts (RFC 2046), each without its headers."""
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise UploadError("malformed multipart body: boundary not found")
    parts = []
    for chunk in chunks[1:-1]:  # before the first delimiter: preamble; after the last: "--" epilogue
        chunk = chunk.removeprefix(b"\r\n")
        headers_end = chunk.find(b"\r\n\r\n")
        if headers_end < 0:
            raise UploadError("malformed multipart body: a part has no header end")
        headers = chunk[:headers_end].decode("latin-1").lower()
        if "content-type" in headers and "application/dicom" not in headers:
            raise UploadError("every part must be application/dicom", status_code=415)
        parts.append(chunk[headers_end + 4 :].removesuffix(b"\r\n"))
    return parts


def check_dicom(name: str, data: bytes) -> UploadedFile:
    try:
        syntax = check_structure(data)  # first: the parsers below are not safe from what it refuses
    except MalformedDicom as error:
        raise UploadError(f"{name} is not valid DICOM: {error}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = dcmread(BytesIO(data))
            for element in dataset.iterall():  # forces every element to parse
                _ = element.value
    except InvalidDicomError as error:
        raise UploadError(f"{name} is not valid DICOM: {error}") from error
    except Exception as error:  # hostile bytes can fail pydicom in many ways; all mean "invalid"
        raise UploadError(f"{name} is not valid DICOM: {error.__class__.__name__}: {error}") from error
    uids = {keyword: str(dataset.get(keyword, "")) for keyword in REQUIRED_UIDS}
    for keyword, value in uids.items():
        if not is_uid(value):
            raise UploadError(f"{name} has a missing or malformed {keyword}")
    _check_pixel_data(name, dataset, UID(syntax))
    return UploadedFile(
        name=name,
        data=data,
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_uid=uids["StudyInstanceUID"],
    )


# The Image Pixel Module values a picture may have (PS3.3 C.7.6.3): Orthanc 1.10 crashed rendering a JPEG
# 2000 file that claimed 255 samples per pixel.
PIXEL_MODULE_VALUES = {
    "SamplesPerPixel": frozenset({1, 3}),
    "PixelRepresentation": frozenset({0, 1}),
    "BitsAllocated": frozenset({1, 8, 16, 32, 64}),
}


def _check_pixel_module(name: str, dataset: Any) -> None:
    """The Image Pixel Module's values within what the standard allows, wherever they appear."""
    try:
        for keyword, allowed in PIXEL_MODULE_VALUES.items():
            value = dataset.get(keyword)
            if value is not None and value != "" and int(value) not in allowed:
                raise UploadError(f"{name} has {keyword} {value} (allowed: {sorted(allowed)})")
        allocated, stored = dataset.get("BitsAllocated"), dataset.get("BitsStored")
        if allocated and stored is not None and not 1 <= int(stored) <= int(allocated):
            raise UploadError(f"{name} stores {stored} bits in {allocated} allocated")
    except (TypeError, ValueError) as error:
        raise UploadError(f"{name} has a malformed Image Pixel Module: {error}") from None


def _check_pixel_data(name: str, dataset: Any, syntax: UID) -> None:
    _check_pixel_module(name, dataset)
    if "PixelData" not in dataset:
        return
    if syntax.is_compressed:
        _check_frames(name, dataset, syntax)
        return
    try:
        expected = get_expected_length(dataset)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise UploadError(f"{name} has pixel data but no usable image description: {error}") from error
    if len(dataset.PixelData) < expected:
        raise UploadError(
            f"{name} is truncated: {len(dataset.PixelData)} bytes of pixel data, {expected} expected"
        )


def _check_frames(name: str, dataset: Dataset, syntax: UID) -> None:
    """Encapsulated pixel data: as many frames as the header declares (each takes at least one fragment),
    each one's own header in agreement with the dataset."""
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError) as error:
        raise UploadError(f"{name} has pixel data but no usable image size: {error}") from None
    if frames < 1:
        raise UploadError(f"{name} declares {frames} frames")
    try:
        stored = list(generate_frames(dataset.PixelData, number_of_frames=frames))
    except Exception as error:
        raise UploadError(f"{name}'s encapsulated pixel data does not parse: {error}") from None
    if len(stored) < frames:
        raise UploadError(f"{name} declares {frames} frames; its pixel data holds {len(stored)}")
    try:
        for frame in stored:
            check_frame(str(syntax), frame, rows, columns)
    except MalformedDicom as error:
        raise UploadError(f"{name} has a frame that cannot be decoded: {error}") from None


def stow_response(files: list[UploadedFile]) -> dict[str, Any]:
    """The STOW-RS response body (DICOM JSON): the Referenced SOP Sequence of stored instances."""
    return {
        "00081199": {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": [f.sop_class_uid]},
                    "00081155": {"vr": "UI", "Value": [f.sop_instance_uid]},
                }
                for f in files
            ],
        }
    }
