"""How a frame's bytes are encoded: the transfer syntaxes the viewer meets, the pixel format of an
instance, a stored frame decoded with pydicom into Explicit VR Little Endian, and the multipart/related
bodies frames travel in (Orthanc's answers read, the platform's own written).

No I/O here: ``viewer.reading.frames`` fetches, caches and serves the frames these functions read and write.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from viewer.archive.multipart import MultipartError, boundary_of

EXPLICIT_LE = "1.2.840.10008.1.2.1"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
# JPEG 2000 (lossless, lossy) and HTJ2K: Orthanc must never be asked to transcode these.
JPEG_2000 = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)
AS_STORED = "*"


class FrameError(RuntimeError):
    """Orthanc did not give the frame (unknown instance or frame number, or an archive error)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class PixelFormat:
    """What decoding a frame needs to know, from the instance's attributes."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    planar_configuration: int
    frames: int

    @classmethod
    def from_dataset(cls, ds: Dataset) -> PixelFormat:
        bits_allocated = int(ds.get("BitsAllocated") or 16)
        return cls(
            rows=int(ds.get("Rows") or 0),
            columns=int(ds.get("Columns") or 0),
            samples_per_pixel=int(ds.get("SamplesPerPixel") or 1),
            bits_allocated=bits_allocated,
            bits_stored=int(ds.get("BitsStored") or bits_allocated),
            pixel_representation=int(ds.get("PixelRepresentation") or 0),
            photometric=str(ds.get("PhotometricInterpretation") or "MONOCHROME2").strip(),
            planar_configuration=int(ds.get("PlanarConfiguration") or 0),
            frames=max(1, int(ds.get("NumberOfFrames") or 1)),
        )

    @property
    def served_photometric(self) -> str:
        """Colour-difference encodings (YBR_*) are served converted to RGB, as Orthanc's transcoding does."""
        return "RGB" if self.photometric.startswith("YBR") else self.photometric

    def decoder_options(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "columns": self.columns,
            "samples_per_pixel": self.samples_per_pixel,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": self.pixel_representation,
            "photometric_interpretation": self.photometric,
            "planar_configuration": self.planar_configuration,
            "number_of_frames": 1,
            "pixel_keyword": "PixelData",
        }


@dataclass(frozen=True)
class FramePart:
    """One part of a WADO-RS frames answer: the frame's bytes and the transfer syntax they are in."""

    transfer_syntax: str
    data: bytes


_TRANSFER_SYNTAX = re.compile(r"transfer-syntax\s*=\s*\"?([0-9.]+|\*)", re.IGNORECASE)


def transfer_syntax_of(content_type: str) -> str | None:
    found = _TRANSFER_SYNTAX.search(content_type)
    return found.group(1) if found else None


def parse_multipart(content_type: str, body: bytes) -> list[FramePart]:
    """The parts of a multipart/related answer (RFC 2046) with the transfer syntax each names."""
    try:
        boundary = boundary_of(content_type)
    except MultipartError as error:
        raise FrameError("the archive answered without a multipart boundary", 502) from error
    default_syntax = transfer_syntax_of(content_type) or EXPLICIT_LE
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        chunk = chunk.removeprefix(b"\r\n")
        head, separator, data = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise FrameError("the archive answered a malformed multipart body", 502)
        syntax = transfer_syntax_of(head.decode("latin-1")) or default_syntax
        parts.append(FramePart(syntax, data.removesuffix(b"\r\n")))
    return parts


def multipart_body(frames: Sequence[bytes], boundary: str) -> bytes:
    """The platform's own frames answer: one application/octet-stream part per frame, Explicit VR LE."""
    body = b"".join(part_head(boundary) + frame + b"\r\n" for frame in frames)
    return body + f"--{boundary}--\r\n".encode()


def part_head(boundary: str, location: str | None = None) -> bytes:
    """One part's delimiter and headers; a bulk data part names its frame (PS3.18 Content-Location)."""
    named = f"Content-Location: {location}\r\n" if location else ""
    content_type = f"Content-Type: application/octet-stream; transfer-syntax={EXPLICIT_LE}\r\n"
    return f"--{boundary}\r\n{content_type}{named}\r\n".encode()


def needs_decoding(transfer_syntax: str, photometric: str | None) -> bool:
    """Native little-endian frames pass as they are, unless their colours must be converted to RGB."""
    if transfer_syntax not in (EXPLICIT_LE, IMPLICIT_LE):
        return True
    return photometric is not None and photometric.startswith("YBR")


def to_explicit_le(part: FramePart, fmt: PixelFormat) -> bytes:
    """A stored frame decoded with pydicom (as ``pixel_array`` would) into Explicit VR LE bytes.

    CPU work: call it in a worker thread.
    """
    syntax = UID(part.transfer_syntax)
    source = encapsulate([part.data]) if syntax.is_compressed else part.data
    pixels, _ = get_decoder(syntax).as_array(source, **fmt.decoder_options())
    if fmt.samples_per_pixel > 1 and fmt.planar_configuration == 1:
        pixels = np.moveaxis(pixels, -1, 0)  # the decoders interleave; the file says colour-by-plane
    width = max(1, fmt.bits_allocated // 8)
    kind = "i" if pixels.dtype.kind == "i" else "u"
    return np.ascontiguousarray(pixels, dtype=f"<{kind}{width}").tobytes()


def frames_of_file(data: bytes, largest: int | None = None) -> tuple[str, list[bytes]]:
    """A stored instance's SOP Instance UID and every one of its frames in Explicit VR Little Endian, as
    the frames route serves them. CPU work: call it in a worker thread.

    Raises FrameError for what the route would not serve from a file either (no pixel data, 1-bit
    packed frames), and for frames that would decode to more than ``largest`` bytes in all (a small
    compressed file may declare thousands of large frames); the caller then leaves those frames to be
    fetched one at a time.
    """
    ds = dcmread(io.BytesIO(data))
    fmt = PixelFormat.from_dataset(ds)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    pixels = ds.get("PixelData")
    if not pixels or fmt.bits_allocated < 8:
        raise FrameError("no pixel data this path serves", 404)
    frame_bytes = fmt.rows * fmt.columns * fmt.samples_per_pixel * (fmt.bits_allocated // 8)
    if largest is not None and fmt.frames * frame_bytes > largest:
        raise FrameError(f"{fmt.frames} frames of {frame_bytes} bytes: more than {largest} bytes", 413)
    if UID(syntax).is_compressed:
        stored = list(generate_frames(pixels, number_of_frames=fmt.frames))[: fmt.frames]
        whole = len(stored) == fmt.frames
    else:
        stored = [pixels[index * frame_bytes : (index + 1) * frame_bytes] for index in range(fmt.frames)]
        whole = frame_bytes > 0 and len(pixels) >= fmt.frames * frame_bytes
    if not whole:
        raise FrameError("the file holds fewer frames than it declares", 502)
    parts = (FramePart(syntax, bytes(frame)) for frame in stored)
    decoded = [
        to_explicit_le(part, fmt) if needs_decoding(syntax, fmt.photometric) else part.data for part in parts
    ]
    return str(ds.SOPInstanceUID), decoded
