"""How a frame's bytes are encoded: the transfer syntaxes the viewer meets, the pixel format of an
instance, a stored frame decoded with pydicom into Explicit VR Little Endian, and the multipart/related
bodies frames travel in (Orthanc's answers read, the platform's own written).

No I/O here: ``viewer.reading.frames`` fetches, caches and serves the frames these functions read and write.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from viewer.archive.multipart import MultipartError, boundary_of
from viewer.reading.image_header import header_of

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
RLE = "1.2.840.10008.1.2.5"
# 12-bit JPEG Extended: the one syntax pydicom has no decoder for, left to Orthanc's transcoding.
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
# PackBits, which RLE Lossless uses, turns at most 2 bytes into 128: a frame cannot decode to more than
# 64 times its compressed size (PS3.5 G.3.1), whatever its header claims.
RLE_MAX_EXPANSION = 64
DEFAULT_MAX_FRAME_BYTES = 128 * 1024 * 1024


class FrameError(RuntimeError):
    """Orthanc did not give the frame (unknown instance or frame number, or an archive error)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class Undecodable(FrameError):
    """The stored file itself cannot give the frame (a header that claims more than the file holds, corrupt
    compressed data): the answer is 422, which blames the file, not 502, which would blame the archive."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"this file cannot be decoded: {reason}", 422)
        self.reason = reason


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
        """Raises Undecodable for a value that is not a whole number (hostile headers carry anything)."""
        bits_allocated = _header_int(ds, "BitsAllocated", 16)
        return cls(
            rows=_header_int(ds, "Rows", 0),
            columns=_header_int(ds, "Columns", 0),
            samples_per_pixel=_header_int(ds, "SamplesPerPixel", 1),
            bits_allocated=bits_allocated,
            bits_stored=_header_int(ds, "BitsStored", bits_allocated),
            pixel_representation=_header_int(ds, "PixelRepresentation", 0),
            photometric=str(ds.get("PhotometricInterpretation") or "MONOCHROME2").strip(),
            planar_configuration=_header_int(ds, "PlanarConfiguration", 0),
            frames=max(1, _header_int(ds, "NumberOfFrames", 1)),
        )

    @property
    def frame_bytes(self) -> int:
        """One frame decoded into Explicit VR Little Endian, as the frames route serves it."""
        return self.rows * self.columns * self.samples_per_pixel * max(1, self.bits_allocated // 8)

    @property
    def stored_frame_bytes(self) -> int:
        """One frame as stored without compression (1-bit pixels packed eight to a byte)."""
        return (self.rows * self.columns * self.samples_per_pixel * self.bits_allocated + 7) // 8

    def check_decodable(self, max_frame_bytes: int) -> None:
        """Refuse, from the header alone and before anything is allocated, a frame that would decode to
        nothing or to more than ``max_frame_bytes`` (a header may claim 65535 x 65535 pixels)."""
        if self.rows < 1 or self.columns < 1:
            raise Undecodable(f"the header declares a {self.columns} x {self.rows} image")
        if self.bits_allocated not in (1, 8, 16, 32):
            raise Undecodable(f"{self.bits_allocated} bits allocated per pixel (1, 8, 16 or 32 are read)")
        if self.samples_per_pixel not in (1, 3):  # Orthanc 1.10 crashed rendering a file claiming 255
            raise Undecodable(f"{self.samples_per_pixel} samples per pixel (1 or 3 are read)")
        if self.pixel_representation not in (0, 1) or not 1 <= self.bits_stored <= self.bits_allocated:
            raise Undecodable(
                f"pixel representation {self.pixel_representation}, {self.bits_stored} bits stored in "
                f"{self.bits_allocated} allocated"
            )
        if self.frame_bytes > max_frame_bytes:
            raise Undecodable(
                f"a frame of {self.columns} x {self.rows} x {self.samples_per_pixel} samples of "
                f"{self.bits_allocated} bits would decode to {self.frame_bytes} bytes, more than the "
                f"{max_frame_bytes} this platform decodes (OPENAIM_VIEWER_MAX_FRAME_MB)"
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


def multipart_body(frames: Sequence[bytes], boundary: str, transfer_syntax: str = EXPLICIT_LE) -> bytes:
    """The platform's own frames answer: one application/octet-stream part per frame, Explicit VR LE
    (or the file's own syntax, for big-endian frames served as stored)."""
    body = b"".join(part_head(boundary, None, transfer_syntax) + frame + b"\r\n" for frame in frames)
    return body + f"--{boundary}--\r\n".encode()


def part_head(boundary: str, location: str | None = None, transfer_syntax: str = EXPLICIT_LE) -> bytes:
    """One part's delimiter and headers; a bulk data part names its frame (PS3.18 Content-Location)."""
    named = f"Content-Location: {location}\r\n" if location else ""
    content_type = f"Content-Type: application/octet-stream; transfer-syntax={transfer_syntax}\r\n"
    return f"--{boundary}\r\n{content_type}{named}\r\n".encode()


def needs_decoding(transfer_syntax: str, photometric: str | None) -> bool:
    """Native little-endian frames pass as they are, unless their colours must be converted to RGB."""
    if transfer_syntax not in (EXPLICIT_LE, IMPLICIT_LE):
        return True
    return photometric is not None and photometric.startswith("YBR")


def to_explicit_le(
    part: FramePart, fmt: PixelFormat, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> bytes:
    """A stored frame decoded with pydicom (as ``pixel_array`` would) into Explicit VR LE bytes.

    Raises Undecodable, before decoding, for a frame larger than ``max_frame_bytes`` or larger than its
    stored bytes can hold, and for whatever the decoder fails on. CPU work: call it in a worker thread.
    """
    fmt.check_decodable(max_frame_bytes)
    syntax = UID(part.transfer_syntax)
    if not syntax.is_transfer_syntax:
        raise Undecodable(f"unknown transfer syntax {part.transfer_syntax!r}")
    if syntax.is_compressed:
        _check_compressed_size(part, fmt)
    elif len(part.data) < fmt.stored_frame_bytes:
        raise Undecodable(
            f"a frame of {len(part.data)} bytes where the header declares {fmt.stored_frame_bytes}"
        )
    source = encapsulate([part.data]) if syntax.is_compressed else part.data
    try:
        pixels, _ = get_decoder(syntax).as_array(source, **fmt.decoder_options())
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # the Rust decoders (pylibjpeg-rle) panic on corrupt data: a BaseException
        raise Undecodable(f"{syntax.name}: {_brief(error)}") from None
    if fmt.samples_per_pixel > 1 and fmt.planar_configuration == 1:
        pixels = np.moveaxis(pixels, -1, 0)  # the decoders interleave; the file says colour-by-plane
    width = max(1, fmt.bits_allocated // 8)
    kind = "i" if pixels.dtype.kind == "i" else "u"
    return np.ascontiguousarray(pixels, dtype=f"<{kind}{width}").tobytes()


def _check_compressed_size(part: FramePart, fmt: PixelFormat) -> None:
    if not part.data:
        raise Undecodable("an empty compressed frame")
    if part.transfer_syntax == RLE and fmt.frame_bytes > RLE_MAX_EXPANSION * len(part.data):
        raise Undecodable(
            f"an RLE frame of {len(part.data)} bytes cannot decode to the {fmt.frame_bytes} bytes its "
            "header declares"
        )


def _header_int(ds: Dataset, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
        return int(value) if value else default
    except Exception:  # text where a number belongs, several values, a value pydicom cannot convert
        raise Undecodable(f"its {keyword} is not a whole number") from None


def _brief(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FileFrames(NamedTuple):
    """What a stored file gives the viewer: every frame as served, and the attributes its description
    needs (``image_header.header_of``)."""

    instance_uid: str
    frames: list[bytes]
    header: Dataset


def frames_of_file(
    data: bytes, largest: int | None = None, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> FileFrames:
    """A stored instance's SOP Instance UID, every one of its frames in Explicit VR Little Endian, as the
    frames route serves them, and its header. CPU work: call it in a worker thread.

    Raises FrameError for what the route would not serve from a file either (no pixel data, 1-bit
    packed frames), and for frames that would decode to more than ``largest`` bytes in all (a small
    compressed file may declare thousands of large frames); the caller then leaves those frames to be
    fetched one at a time. Raises Undecodable when the header claims more frames than the pixel data
    holds (Number of Frames is checked against the file before anything is allocated or looped over).
    """
    try:
        ds = dcmread(io.BytesIO(data))
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        pixels = ds.get("PixelData")
    except Exception as error:
        raise Undecodable(f"the file does not parse ({_brief(error)})") from None
    fmt = PixelFormat.from_dataset(ds)
    if not pixels or fmt.bits_allocated < 8:
        raise FrameError("no pixel data this path serves", 404)
    fmt.check_decodable(max_frame_bytes)
    if not syntax.is_transfer_syntax:
        raise Undecodable(f"unknown transfer syntax {str(syntax)!r}")
    if largest is not None and fmt.frames * fmt.frame_bytes > largest:
        raise FrameError(f"{fmt.frames} frames of {fmt.frame_bytes} bytes: more than {largest} bytes", 413)
    stored = _stored_frames(pixels, syntax, fmt)
    parts = (FramePart(str(syntax), bytes(frame)) for frame in stored)
    decoded = [
        to_explicit_le(part, fmt, max_frame_bytes)
        if needs_decoding(str(syntax), fmt.photometric)
        else part.data
        for part in parts
    ]
    return FileFrames(str(ds.get("SOPInstanceUID", "")), decoded, header_of(ds))


def _stored_frames(pixels: bytes, syntax: UID, fmt: PixelFormat) -> list[bytes]:
    """The frames as stored, once the file is known to hold as many as its header declares."""
    if not syntax.is_compressed:
        size = fmt.stored_frame_bytes
        if len(pixels) < fmt.frames * size:
            raise Undecodable(
                f"the header declares {fmt.frames} frames of {size} bytes; the file holds "
                f"{len(pixels)} bytes of pixel data"
            )
        return [pixels[index * size : (index + 1) * size] for index in range(fmt.frames)]
    fragments = encapsulated_fragments(pixels)
    if fmt.frames > fragments:  # every frame takes at least one fragment (PS3.5 A.4)
        raise Undecodable(
            f"the header declares {fmt.frames} frames; the pixel data holds {fragments} fragments"
        )
    try:
        stored = list(generate_frames(pixels, number_of_frames=fmt.frames))[: fmt.frames]
    except Exception as error:
        raise Undecodable(f"its encapsulated pixel data does not parse ({_brief(error)})") from None
    if len(stored) != fmt.frames:
        raise Undecodable(f"the header declares {fmt.frames} frames; the pixel data holds {len(stored)}")
    return stored


def encapsulated_fragments(pixels: bytes) -> int:
    """How many fragments encapsulated Pixel Data holds (its Basic Offset Table item not counted), read from
    the item headers only; stops at the sequence delimiter or where an item would run past the data."""
    position, count, first = 0, 0, True
    while position + 8 <= len(pixels):
        group, element, length = struct.unpack_from("<HHL", pixels, position)
        if (group, element) != (0xFFFE, 0xE000):  # an item; anything else ends the fragments
            break
        position += 8 + length
        if position > len(pixels):
            break
        count += 0 if first else 1
        first = False
    return count
