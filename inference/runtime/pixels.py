"""A DICOM object to the picture a reader sees: (H, W) uint8 greyscale, MONOCHROME2, windowed.

Models here are trained on what a radiologist looks at (ChestX-ray14 is 8-bit PNG made from displayed
images), so the runtime feeds them the same: stored values through the modality LUT (Hounsfield units,
optical density...), then the file's own window or VOI LUT, MONOCHROME1 turned so that dense is bright,
colour reduced to its luma. pydicom decodes every transfer syntax it has a plugin for (pylibjpeg, pyjpegls)
and applies the LUTs; this module chooses which transforms apply to which frame and scales to 8 bits.

Everything that makes an object unusable is found from its header before a pixel is decoded
(``check_image``), so a file that claims 20000 x 20000 pixels, or a report that is not a picture at all,
costs nothing. Each refusal is an ``UnreadableImage`` whose reason an administrator can act on.

Not covered: supplemental palettes (greyscale with colour ranges), ICC profiles, Presentation States,
Real World Value Maps, and a Presentation LUT Shape of INVERSE on MONOCHROME2 (not allowed for DX/MG/CR,
rare elsewhere). Enhanced multi-frame objects get their rescale and window from the frame's functional
groups (per-frame first, then shared).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.pixels.utils import as_pixel_options, get_expected_length
from pydicom.uid import UID, ParametricMapStorage, RTDoseStorage, SegmentationStorage

MAX_PIXELS_PER_FRAME: Final = 8192 * 8192
"""Larger frames are refused from the header: they are not radiographs, and decoding one costs gigabytes."""

MIN_SIDE: Final = 32
"""Smaller images (icons, 1x1 placeholders, 16x16 test objects) carry nothing a model can read."""

MONOCHROME: Final = frozenset({"MONOCHROME1", "MONOCHROME2"})
PALETTE: Final = "PALETTE COLOR"
COLOUR: Final = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"})

# Objects that hold Pixel Data but are not pictures of the patient: masks and maps made by other algorithms,
# and dose grids. A model that read them would read another machine's output.
NOT_PICTURES: Final = frozenset(
    {
        SegmentationStorage,
        UID("1.2.840.10008.5.1.4.1.1.66.7"),  # Label Map Segmentation Storage (2024)
        UID("1.2.840.10008.5.1.4.1.1.66.8"),  # Height Map Segmentation Storage (2024)
        ParametricMapStorage,
        RTDoseStorage,
    }
)

# What decides the grey levels of one frame; an enhanced object moves some of them into functional groups.
_FRAME_KEYWORDS: Final = (
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)
_FRAME_FUNCTIONAL_GROUPS: Final = ("PixelValueTransformationSequence", "FrameVOILUTSequence")

# ITU-R BT.601 luma weights, on gamma-encoded R'G'B' as stored in DICOM.
_LUMA: Final = np.array([0.299, 0.587, 0.114])
_UNDEFINED_LENGTH: Final = 0xFFFFFFFF
_MAX_REASON: Final = 300


class UnreadableImage(Exception):
    """The object cannot be read as an image by a model; ``reason`` says why in words an admin understands."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_dataset(data: bytes) -> Dataset:
    """A DICOM Part 10 file (with its 128-byte preamble and DICM prefix) as a dataset."""
    buffer = io.BytesIO(data)
    try:
        ds = pydicom.dcmread(buffer)
    except InvalidDicomError:
        raise UnreadableImage("not a DICOM file (no DICOM file meta information)") from None
    except Exception as error:
        raise UnreadableImage(f"the file could not be parsed as DICOM ({_brief(error)})") from None
    if _ends_inside_an_element(ds, buffer, len(data)):
        raise UnreadableImage(f"the file is truncated ({len(data)} bytes): it ends inside a DICOM element")
    if not ds.file_meta.get("TransferSyntaxUID"):
        raise UnreadableImage("the file meta information has no Transfer Syntax UID")
    return ds


def check_image(ds: Dataset, min_side: int = MIN_SIDE) -> None:
    """Refuse, from the header alone, what ``display_frame`` cannot turn into a picture worth reading.
    ``min_side``: the smallest side a model reads; a picture for people may be any size (1)."""
    with _malformed_header():
        _check_is_picture(ds)
        _check_size(ds, min_side)
        _check_pixel_encoding(ds)
        _check_transfer_syntax(ds)
        _check_pixel_data_length(ds)


def display_frame(
    ds: Dataset,
    frame: int = 0,
    *,
    voi: bool = True,
    invert_monochrome1: bool = True,
    min_side: int = MIN_SIDE,
) -> np.ndarray:
    """One frame as a reader sees it: (H, W) uint8, bright = dense.

    ``voi=False`` (or a file without a usable window) gives the standard's default, identity: values stored in
    8 bits or fewer are shown as they are (0..2^BitsStored-1 through the modality LUT to 0..255). Deeper
    values scale the frame's own range after the modality LUT, min..max, to 0..255, as Orthanc's
    ``/rendered`` and most viewers do without a window.
    """
    check_image(ds, min_side)
    frames = number_of_frames(ds)
    if not 0 <= frame < frames:
        raise IndexError(f"frame {frame} does not exist: the object has {frames} frame(s)")
    pixels, photometric = _decode(ds, frame)
    if photometric in MONOCHROME:
        invert = invert_monochrome1 and photometric == "MONOCHROME1"
        with _malformed_header():
            return _monochrome(pixels, _frame_view(ds, frame), voi=voi, invert=invert)
    if photometric == PALETTE:
        with _malformed_header():
            rgb = apply_color_lut(pixels, ds)
            return _to_uint8(_luma(rgb) / _palette_maximum(ds.RedPaletteColorLookupTableDescriptor))
    if photometric != "RGB":  # pydicom hands YCbCr back as RGB (JPEG 2000 undoes its own transform)
        raise UnreadableImage(f"the colour pixels decode as {photometric}, not RGB")
    return _to_uint8(_luma(pixels) / (2 ** int(ds.BitsStored) - 1))


def representative_frame(ds: Dataset) -> int:
    """The frame a model reads from a multi-frame object: the middle one (0 for a single frame)."""
    return number_of_frames(ds) // 2


def number_of_frames(ds: Dataset) -> int:
    """Number of Frames, 1 when absent; a value that is not a positive whole number is refused."""
    if ds.get("NumberOfFrames") in (None, ""):
        return 1
    frames = _header_int(ds, "NumberOfFrames")
    if frames < 1:
        raise UnreadableImage(f"the header claims {frames} frames")
    return frames


# ---- reading ------------------------------------------------------------------------------------------


def _ends_inside_an_element(ds: Dataset, buffer: io.BytesIO, size: int) -> bool:
    # pydicom stops quietly, with a warning, at an undefined-length element it cannot finish (encapsulated
    # pixel data, sequences) and reads a defined-length one short without a word; either means the file
    # was cut.
    if buffer.tell() < size:
        return True
    if not len(ds):
        return False
    last = ds.get_item(max(ds.keys()))
    return (
        isinstance(last, RawDataElement)
        and last.length != _UNDEFINED_LENGTH
        and last.value is not None
        and len(last.value) < last.length
    )


# ---- header checks --------------------------------------------------------------------------------------


def _check_is_picture(ds: Dataset) -> None:
    sop_class = ds.get("SOPClassUID")
    kind = f"its SOP class is {UID(sop_class).name or sop_class}" if sop_class else "it has no SOP Class UID"
    if sop_class in NOT_PICTURES:
        raise UnreadableImage(f"not a picture of the patient: {kind}, the result of another algorithm")
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise UnreadableImage(f"not a picture: {kind} and its pixels are floating-point values (a map)")
        raise UnreadableImage(f"not an image: {kind} and it has no Pixel Data")


def _check_size(ds: Dataset, min_side: int) -> None:
    rows, columns = _header_int(ds, "Rows"), _header_int(ds, "Columns")
    if rows * columns > MAX_PIXELS_PER_FRAME:
        raise UnreadableImage(
            f"the header claims {columns} x {rows} pixels per frame, more than the {MAX_PIXELS_PER_FRAME} "
            "pixels this platform decodes"
        )
    if min(rows, columns) < min_side:
        raise UnreadableImage(
            f"the image is {columns} x {rows} pixels: too small for a model to read "
            f"(at least {min_side} pixels a side)"
        )
    number_of_frames(ds)


def _check_pixel_encoding(ds: Dataset) -> None:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in MONOCHROME | COLOUR | {PALETTE}:
        raise UnreadableImage(
            f"photometric interpretation {photometric or '(none)'!r} is not supported "
            "(greyscale, RGB, YCbCr or palette colour only)"
        )
    samples = _header_int(ds, "SamplesPerPixel")
    expected_samples = 3 if photometric in COLOUR else 1
    if samples != expected_samples:
        raise UnreadableImage(
            f"{photometric} needs {expected_samples} samples per pixel, the header says {samples}"
        )
    allocated, stored = _header_int(ds, "BitsAllocated"), _header_int(ds, "BitsStored")
    if allocated == 1:
        raise UnreadableImage("the pixels are 1 bit deep: a binary mask, not a picture")
    if allocated not in (8, 16, 32):
        raise UnreadableImage(f"{allocated} bits allocated per pixel is not supported (8, 16 or 32)")
    if not 1 <= stored <= allocated:
        raise UnreadableImage(f"{stored} bits stored does not fit in {allocated} bits allocated")
    if _header_int(ds, "PixelRepresentation") not in (0, 1):
        raise UnreadableImage("Pixel Representation must be 0 (unsigned) or 1 (signed)")
    if photometric == PALETTE and "RedPaletteColorLookupTableDescriptor" not in ds:
        raise UnreadableImage("a PALETTE COLOR image without its palette (Red Palette Color LUT Descriptor)")


def _check_transfer_syntax(ds: Dataset) -> None:
    syntax = UID(ds.file_meta.get("TransferSyntaxUID", ""))
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise UnreadableImage(f"transfer syntax {syntax.name or '(none)'} cannot be decoded") from None
    if not decoder.is_available:
        raise UnreadableImage(f"no decoder for transfer syntax {syntax.name} is installed")


def _check_pixel_data_length(ds: Dataset) -> None:
    # Only uncompressed data has a length known from the header; a cut compressed stream fails to decode.
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    expected = get_expected_length(ds, "bytes")
    actual = len(ds.PixelData)
    if actual < expected:
        raise UnreadableImage(
            f"the pixel data is truncated: {actual} bytes where the header promises {expected}"
        )


@contextmanager
def _malformed_header() -> Iterator[None]:
    # pydicom converts an element's value when it is first read, so a corrupt element (an unknown VR, text
    # where a number belongs) fails wherever it is used, with whatever exception that code raises.
    try:
        yield
    except UnreadableImage:
        raise
    except Exception as error:
        raise UnreadableImage(f"the header is malformed: {_brief(error)}") from None


def _header_int(ds: Dataset, keyword: str) -> int:
    try:
        return int(ds.get(keyword))
    except Exception:  # absent (None), empty, or a value pydicom cannot convert
        raise UnreadableImage(f"the header has no valid {keyword}") from None


# ---- pixels ---------------------------------------------------------------------------------------------


def _decode(ds: Dataset, frame: int) -> tuple[np.ndarray, str]:
    """The frame's stored values (masked to Bits Stored, sign-extended) and their photometric interpretation:
    pydicom converts YBR_FULL(_422) to RGB, and JPEG 2000 undoes its own colour transform."""
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        pixels, meta = get_decoder(syntax).as_array(ds, index=frame, **as_pixel_options(ds))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # Rust decoders (pylibjpeg-rle) panic on corrupt data: a BaseException
        raise UnreadableImage(
            f"the pixel data could not be decoded ({syntax.name}): {_brief(error)}"
        ) from None
    return pixels, str(meta.get("photometric_interpretation", ds.PhotometricInterpretation))


def _frame_view(ds: Dataset, frame: int) -> Dataset:
    """A small dataset with what decides this frame's grey levels, functional groups folded in, so pydicom's
    LUT functions (which read only top-level attributes) apply to enhanced objects too. Copies: pydicom
    writes to the dataset it is given."""
    view = Dataset()
    view.file_meta = ds.file_meta  # the byte order of OW LUT data
    for keyword in _FRAME_KEYWORDS:
        if keyword in ds:
            view.add(copy.copy(ds[keyword]))
    for group in _functional_groups(ds, frame):
        for name in _FRAME_FUNCTIONAL_GROUPS:
            if group.get(name):
                view.update(group[name][0])
    return view


def _functional_groups(ds: Dataset, frame: int) -> list[Dataset]:
    groups = []
    if ds.get("SharedFunctionalGroupsSequence"):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        groups.append(per_frame[frame])  # after the shared group: the frame's own values win
    return groups


def _monochrome(stored: np.ndarray, view: Dataset, *, voi: bool, invert: bool) -> np.ndarray:
    """Stored greyscale values to uint8. Integer pixels of up to 16 bits take at most 65536 distinct values,
    far fewer than a radiograph has pixels: each distinct value is transformed once and the frame is looked
    up in that table (same result, about 8x faster on a 1024 x 1024 chest X-ray)."""
    if stored.dtype.kind not in "iu" or stored.dtype.itemsize > 2:
        return _grey_uint8(stored, view, voi=voi, invert=invert)
    low = int(stored.min())
    index = np.subtract(stored, low, dtype=np.int32)
    counts = np.bincount(index.ravel())
    present = np.flatnonzero(counts)  # only values the frame holds: a stretch sees the frame's own range
    table = np.zeros(len(counts), dtype=np.uint8)
    table[present] = _grey_uint8((present + low).astype(stored.dtype), view, voi=voi, invert=invert)
    return table[index]


def _grey_uint8(stored: np.ndarray, view: Dataset, *, voi: bool, invert: bool) -> np.ndarray:
    fraction = _greyscale(stored, view, voi=voi)
    if invert:
        fraction = 1.0 - fraction  # after the VOI, as PS3.3 C.7.6.3.1.2 orders it
    return _to_uint8(fraction)


def _greyscale(stored: np.ndarray, view: Dataset, *, voi: bool) -> np.ndarray:
    """Stored values to 0..1 (0 = the lowest output of the window, 1 = the highest)."""
    values = apply_modality_lut(stored, view)
    fraction = _apply_window(values, view) if voi else None
    if fraction is not None:
        return fraction
    return _identity(values, view) if _stored_bits(view) <= 8 else _stretch(values)


def _stored_bits(view: Dataset) -> int:
    return int(view.get("BitsStored") or 16)


def _identity(values: np.ndarray, view: Dataset) -> np.ndarray:
    """No window: PS3.3 C.11.2's default is identity, every stored value shown as it is. For 8-bit images
    (the photographs and PNG-derived radiographs models are trained on) a stretch would brighten a
    low-contrast picture that the model saw unstretched. Deeper images (CT, 12-16-bit radiographs) keep the
    min..max stretch: identity would show a 12-bit radiograph at a sixteenth of its range, almost black."""
    bits = _stored_bits(view)
    signed = int(view.get("PixelRepresentation") or 0) == 1
    first = -(2 ** (bits - 1)) if signed else 0
    ends = apply_modality_lut(np.array([first, first + 2**bits - 1]), view).astype(np.float64)
    low, high = float(ends.min()), float(ends.max())  # a negative slope still shows higher values brighter
    if high <= low:
        return _stretch(values)
    return np.clip((values.astype(np.float64) - low) / (high - low), 0.0, 1.0)


def _apply_window(values: np.ndarray, view: Dataset) -> np.ndarray | None:
    """The file's first VOI (a VOI LUT, else the first Window Center/Width with its VOI LUT Function) as 0..1;
    None when the file has none, or one that cannot be applied (width below 1, unknown function, text)."""
    try:
        if _has_voi_lut(view):
            return _apply_voi_lut_sequence(values, view)
        if _has_window(view):
            # SIGMOID of values far outside a narrow window: exp overflows, rightly, to an output of 0
            with np.errstate(over="ignore"):
                windowed = apply_voi_lut(values, view)
                # The window's output range (y_min, y_max of PS3.3 C.11.2.1.2) is what it gives the extremes.
                low, high = apply_voi_lut(np.array([-np.inf, np.inf]), view)
            return (windowed - low) / (high - low)
    except (ValueError, TypeError, NotImplementedError):
        return None
    return None


def _apply_voi_lut_sequence(values: np.ndarray, view: Dataset) -> np.ndarray:
    # Not pydicom's apply_voi: it indexes an 8-bit LUT with 8-bit integers, so a 4096-entry table wraps.
    item = view.VOILUTSequence[0]
    table = _lut_table(item, little_endian=view.file_meta.TransferSyntaxUID.is_little_endian)
    first_mapped = int(item.LUTDescriptor[1])
    # A LUT is indexed by whole numbers; values outside it take its first or last entry (PS3.3 C.11.2.1.1).
    indices = np.clip(np.rint(values) - first_mapped, 0, len(table) - 1).astype(np.int64)
    return table[indices] / _voi_lut_maximum(table, int(item.LUTDescriptor[2]))


def _lut_table(item: Dataset, *, little_endian: bool) -> np.ndarray:
    """LUT Data as one integer per entry: a list when its VR is US; 16-bit words when OW, or 8-bit entries
    packed two to a word when the data is only as long as the table (both are found in real files)."""
    entries = int(item.LUTDescriptor[0]) or 2**16
    data = item.LUTData
    if isinstance(data, bytes):
        if len(data) >= 2 * entries:
            return np.frombuffer(data, dtype="<u2" if little_endian else ">u2", count=entries)
        if len(data) >= entries:
            return np.frombuffer(data, dtype=np.uint8, count=entries)
        raise ValueError("the LUT Data is shorter than its descriptor")
    table = np.atleast_1d(np.asarray(data, dtype=np.int64))
    if len(table) < entries:
        raise ValueError("the LUT Data is shorter than its descriptor")
    return table[:entries]


def _voi_lut_maximum(table: np.ndarray, declared_bits: int) -> int:
    """The output value shown as white. The descriptor's bit depth, except that many files declare 16 bits
    for a table that never exceeds 12: like web viewers (Cornerstone), trust the bits the table uses."""
    used_bits = max(1, int(table.max()).bit_length())
    return int(2 ** min(declared_bits, used_bits) - 1)


def _has_voi_lut(view: Dataset) -> bool:
    items = view.get("VOILUTSequence")
    return bool(items) and "LUTDescriptor" in items[0] and "LUTData" in items[0]


def _has_window(view: Dataset) -> bool:
    return view.get("WindowCenter") not in (None, "") and view.get("WindowWidth") not in (None, "")


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape)
    return (values.astype(np.float64) - low) / (high - low)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ _LUMA


def _palette_maximum(descriptor: Any) -> int:
    """The largest value a palette's entries may take: its third descriptor value is their bit depth."""
    return int(2 ** int(descriptor[2]) - 1)


def _to_uint8(fraction: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(fraction * 255.0), 0, 255).astype(np.uint8)


def _brief(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
