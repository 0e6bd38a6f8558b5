"""Reading a STOW-RS upload: split multipart/related into files, and check that each is DICOM we can
store (it parses, it names its instance, its pixel data is complete) before anything is stored."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from email.message import Message
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import get_expected_length

from openaim.uids import is_uid

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
    _check_pixel_data(name, dataset)
    return UploadedFile(
        name=name,
        data=data,
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_uid=uids["StudyInstanceUID"],
    )


def _check_pixel_data(name: str, dataset: Any) -> None:
    if "PixelData" not in dataset:
        return
    if dataset.file_meta.TransferSyntaxUID.is_compressed:
        return  # encapsulated: the length depends on the codec; Orthanc checks the fragments
    try:
        expected = get_expected_length(dataset)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise UploadError(f"{name} has pixel data but no usable image description: {error}") from error
    if len(dataset.PixelData) < expected:
        raise UploadError(
            f"{name} is truncated: {len(dataset.PixelData)} bytes of pixel data, {expected} expected"
        )


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
