"""Compressed frames checked from their own headers at upload, before Orthanc stores (and one day decodes)
them: byte-flipped JPEG files have crashed Orthanc 1.10's decoders, and a few bytes of compressed data may
claim any image size.

What is checked, per frame, without decoding a pixel:
- JPEG (baseline, extended, lossless) and JPEG-LS: the frame starts with SOI (FFD8) and ends with EOI (FFD9;
  up to two padding bytes after it, as real files have); every marker segment before the scan fits in the
  frame; a frame header (SOF) comes before the scan and its size equals the dataset's Rows and Columns.
- JPEG 2000 (and HTJ2K): the codestream starts with SOC and SIZ (or is a JP2 file) and, for a codestream,
  the SIZ image size equals Rows and Columns.
- RLE: the 64-byte header names 1 to 15 segments, the first right after the header, the others in order
  and inside the frame, and no segment is too short to decode to Rows x Columns bytes (PackBits expands
  at most 64 times).
The entropy-coded data itself is not decoded: that is the viewer's job, in its own process, with its caps.
"""

from __future__ import annotations

import struct
from typing import Final

from viewer.archive.dicom_structure import MalformedDicom

JPEG: Final = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    }
)
JPEG_2000: Final = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)
RLE: Final = "1.2.840.10008.1.2.5"
# Start-of-frame markers: C0-CF but DHT (C4), JPG (C8) and DAC (CC); F7 is JPEG-LS's SOF55.
SOF_MARKERS: Final = frozenset(set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}) | {0xF7}
STANDALONE_MARKERS: Final = frozenset({0x01, *range(0xD0, 0xD8)})
JP2_SIGNATURE: Final = b"\x00\x00\x00\x0cjP  "
RLE_MAX_EXPANSION: Final = 64


def check_frame(syntax: str, frame: bytes, rows: int, columns: int) -> None:
    """Raise MalformedDicom when the frame's own header contradicts itself or the dataset."""
    if syntax in JPEG:
        _check_jpeg(frame, rows, columns)
    elif syntax in JPEG_2000:
        _check_jpeg_2000(frame, rows, columns)
    elif syntax == RLE:
        _check_rle(frame, rows, columns)


def _check_jpeg(frame: bytes, rows: int, columns: int) -> None:
    if not frame.startswith(b"\xff\xd8"):
        raise MalformedDicom("a JPEG frame does not start with SOI (FFD8)")
    if b"\xff\xd9" not in frame[-4:]:  # EOI, then at most two bytes of padding (00 or FF in real files)
        raise MalformedDicom("a JPEG frame does not end with EOI (FFD9)")
    position, size = 2, None
    while True:
        if position + 2 > len(frame) or frame[position] != 0xFF:
            raise MalformedDicom(f"a JPEG frame has no marker where one belongs (byte {position})")
        while position + 1 < len(frame) and frame[position + 1] == 0xFF:  # fill bytes
            position += 1
        marker = frame[position + 1] if position + 1 < len(frame) else 0xD9
        if marker in STANDALONE_MARKERS or marker == 0xD8:
            position += 2
            continue
        if marker == 0xD9:
            raise MalformedDicom("a JPEG frame ends before its scan")
        if position + 4 > len(frame):
            raise MalformedDicom("a JPEG marker segment is cut short")
        length = struct.unpack_from(">H", frame, position + 2)[0]
        if length < 2 or position + 2 + length > len(frame):
            raise MalformedDicom(f"a JPEG marker segment (FF{marker:02X}) runs past its frame")
        if marker in SOF_MARKERS:
            if length < 8:
                raise MalformedDicom("a JPEG frame header is too short")
            size = struct.unpack_from(">HH", frame, position + 5)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        position += 2 + length
    if size is None:
        raise MalformedDicom("a JPEG frame has no frame header (SOF) before its scan")
    height, width = size
    if (height, width) != (rows, columns):
        raise MalformedDicom(
            f"a JPEG frame is {width} x {height} pixels; the dataset says {columns} x {rows}"
        )


def _check_jpeg_2000(frame: bytes, rows: int, columns: int) -> None:
    if frame.startswith(JP2_SIGNATURE):
        return  # a JP2 file rather than a bare codestream: not standard in DICOM, but decoders read it
    if not frame.startswith(b"\xff\x4f\xff\x51") or len(frame) < 4 + 2 + 2 + 16:
        raise MalformedDicom("a JPEG 2000 frame does not start with SOC and SIZ (FF4F FF51)")
    width, height, left, top = struct.unpack_from(">LLLL", frame, 8)
    if (height - top, width - left) != (rows, columns):
        found = f"{width - left} x {height - top}"
        raise MalformedDicom(f"a JPEG 2000 frame is {found} pixels; the dataset says {columns} x {rows}")


def _check_rle(frame: bytes, rows: int, columns: int) -> None:
    if len(frame) < 64:
        raise MalformedDicom("an RLE frame is shorter than its 64-byte header")
    count, *offsets = struct.unpack_from("<16L", frame)
    if not 1 <= count <= 15:
        raise MalformedDicom(f"an RLE frame names {count} segments (1 to 15 allowed)")
    starts = offsets[:count]
    ends = [*starts[1:], len(frame)]
    if starts[0] != 64 or any(start >= end for start, end in zip(starts, ends, strict=True)):
        raise MalformedDicom("an RLE frame's segment offsets are out of order or outside the frame")
    if any(
        (end - start) * RLE_MAX_EXPANSION < rows * columns for start, end in zip(starts, ends, strict=True)
    ):
        raise MalformedDicom(f"an RLE segment is too short to decode to {columns} x {rows} pixels")
