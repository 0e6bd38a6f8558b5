"""The images of a series as the canvas viewport needs them: display order, pixel format as the frames
will arrive from the platform (Explicit VR Little Endian, YBR converted to RGB), modality LUT, the file's
windows, palettes, and the texts of the on-image information overlay.

Built from the headers of the files the series' background load parses for the frame cache (one reading of
the series by Orthanc), else from one Orthanc request (the series metadata, which reads every file again).
Answering it also starts loading the series' frames: the viewport asks for every frame right after.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException
from pydicom import Dataset

from viewer.access.deps import ArchiveClient, Reader
from viewer.archive.client import Archive
from viewer.archive.dicom_text import dicom_date, person_name, text_value
from viewer.archive.uids import SeriesUID, StudyUID
from viewer.reading.ai_policy import ShownSeries
from viewer.reading.frame_encoding import PixelFormat, Undecodable, parse_multipart
from viewer.reading.frames import Frames, FrameSource
from viewer.reading.image_header import PER_FRAME_GROUPS, WANTED_TAGS
from viewer.reading.slice_order import SlicePlace, in_display_order, indexed_place, normal_distance, numbers

router = APIRouter(prefix="/api")
log = logging.getLogger(__name__)

# Red, green, blue: (descriptor, data) tags of the Palette Color Lookup Table module (PS3.3 C.7.6.3).
PALETTE_TAGS = (("00281101", "00281201"), ("00281102", "00281202"), ("00281103", "00281203"))


def _number(value: Any, default: float | None = None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _functional_group(ds: Dataset, sequence: str) -> Dataset | None:
    """An enhanced multi-frame object's shared (or else first frame's) functional group item."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(groups) or []:
            items = group.get(sequence) or []
            if items:
                return Dataset(items[0])
    return None


def windows(ds: Dataset) -> tuple[list[dict[str, float]], str]:
    """The file's VOI windows (several are allowed) and its VOI LUT Function."""
    source = _functional_group(ds, "FrameVOILUTSequence") or ds
    centers = [_number(value) for value in _as_list(source.get("WindowCenter"))]
    widths = [_number(value) for value in _as_list(source.get("WindowWidth"))]
    found = [
        {"center": center, "width": width}
        for center, width in zip(centers, widths, strict=False)
        if center is not None and width is not None and width > 0
    ]
    function = str(source.get("VOILUTFunction") or "LINEAR").strip().upper()
    return found, function


def rescale(ds: Dataset) -> tuple[float, float]:
    source = _functional_group(ds, "PixelValueTransformationSequence") or ds
    slope = _number(source.get("RescaleSlope"), 1.0) or 1.0
    return slope, _number(source.get("RescaleIntercept"), 0.0) or 0.0


def slice_position(ds: Dataset) -> float | None:
    """Distance along the slice normal; None without a usable Image Position and Orientation (Patient)."""
    return normal_distance(slice_place(ds))


def slice_place(ds: Dataset) -> SlicePlace:
    return SlicePlace(
        uid=str(ds.get("SOPInstanceUID", "")),
        number=instance_number(ds),
        position=numbers(_as_list(ds.get("ImagePositionPatient")), 3),
        orientation=numbers(_as_list(ds.get("ImageOrientationPatient")), 6),
    )


def instance_number(ds: Dataset) -> int | None:
    number = _number(ds.get("InstanceNumber"))
    return int(number) if number is not None else None


def pixel_spacing(ds: Dataset) -> list[float] | None:
    spacing = [_number(v) for v in _as_list(ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing"))]
    return [float(v) for v in spacing if v is not None] if len(spacing) == 2 and None not in spacing else None


def palette_lut(descriptor: list[Any], data: bytes) -> dict[str, Any]:
    """One palette channel: its entries (0..2**bits-1) and the first stored value they map."""
    entries = int(descriptor[0]) or 65536  # PS3.3 C.7.6.3.1.5: 0 means 2**16 entries
    bits = int(descriptor[2])
    words = np.frombuffer(data[: len(data) // 2 * 2], dtype="<u2")
    values = np.frombuffer(data, dtype=np.uint8) if bits == 8 and len(data) == entries else words
    return {"first_mapped": int(descriptor[1]), "bits": bits, "values": values[:entries].tolist()}


def describe(ds: Dataset, palette: dict[str, Any] | None) -> dict[str, Any]:
    fmt = PixelFormat.from_dataset(ds)
    found, function = windows(ds)
    slope, intercept = rescale(ds)
    return {
        "instance_uid": str(ds.SOPInstanceUID),
        "number": instance_number(ds),
        "frames": fmt.frames,
        "rows": fmt.rows,
        "columns": fmt.columns,
        "bits_allocated": fmt.bits_allocated,
        "bits_stored": fmt.bits_stored,
        "high_bit": int(ds.get("HighBit") or fmt.bits_stored - 1),
        "pixel_representation": fmt.pixel_representation,
        "samples_per_pixel": fmt.samples_per_pixel,
        "photometric": fmt.served_photometric,
        "planar_configuration": fmt.planar_configuration,
        "rescale_slope": slope,
        "rescale_intercept": intercept,
        "windows": found,
        "voi_lut_function": function,
        "palette": palette,
        "pixel_spacing": pixel_spacing(ds),
    }


def overlay_info(ds: Dataset) -> dict[str, str]:
    """Texts for the information overlay. Hostile strings: the page sets them with textContent only."""
    return {
        "patient_name": person_name(ds.get("PatientName")),
        "patient_id": text_value(ds, "PatientID"),
        "study_date": dicom_date(ds.get("StudyDate")),
        "study_description": text_value(ds, "StudyDescription"),
        "series_number": text_value(ds, "SeriesNumber"),
        "series_description": text_value(ds, "SeriesDescription"),
        "modality": text_value(ds, "Modality"),
    }


def display_order(datasets: Iterable[Dataset]) -> list[Dataset]:
    """Along the slice normal where the whole series has one geometry, else by InstanceNumber; then UID
    (a stable order for ties). See slice_order.py for the direction."""
    images = [ds for ds in datasets if "SOPInstanceUID" in ds and ds.get("Rows") and ds.get("Columns")]
    return in_display_order(images, slice_place)


def _wanted(item: dict[str, Any]) -> dict[str, Any]:
    """The attributes the description needs; of the per-frame groups, the first frame's only. No bulk
    data: pydicom would fetch it (a bulk data handler instead costs a signature inspection per element)."""
    wanted = {tag: value for tag, value in item.items() if tag in WANTED_TAGS and "BulkDataURI" not in value}
    per_frame = wanted.get(PER_FRAME_GROUPS)
    if per_frame and per_frame.get("Value"):
        wanted[PER_FRAME_GROUPS] = {**per_frame, "Value": per_frame["Value"][:1]}
    return wanted


async def _palette(item: dict[str, Any], archive: ArchiveClient) -> dict[str, Any] | None:
    """The palette's LUTs, fetched here: Orthanc's BulkDataURIs point at Orthanc, not at the proxy."""
    channels = {}
    for name, (descriptor_tag, data_tag) in zip(("red", "green", "blue"), PALETTE_TAGS, strict=True):
        descriptor = item.get(descriptor_tag, {}).get("Value", [])
        element = item.get(data_tag, {})
        if len(descriptor) != 3:
            return None
        if "InlineBinary" in element:
            data = Dataset.from_json({data_tag: element})[data_tag].value
        elif "BulkDataURI" in element:
            response = await archive.bulk_data(element["BulkDataURI"])
            if response is None or response.status_code != 200:
                return None
            parts = parse_multipart(response.headers.get("content-type", ""), response.content)
            data = parts[0].data if parts else b""
        else:
            return None
        channels[name] = palette_lut(descriptor, data)
    return channels


@router.get("/studies/{study_uid}/series/{series_uid}/images")
async def series_images(
    study_uid: StudyUID,
    series_uid: SeriesUID,
    _: Reader,
    __: ShownSeries,
    archive: ArchiveClient,
    source: Frames,
    first: bool = False,
) -> dict[str, Any]:
    """Every image of the series; with ``first``, only the first one, fast (see ``first_image``)."""
    if first and (quick := await first_image(archive, source, study_uid, series_uid)) is not None:
        return quick
    by_uid = await _headers_from_load(archive, source, study_uid, series_uid)
    if by_uid is None:
        by_uid = {}
        for attributes in await archive.series_metadata(study_uid, series_uid):
            ds = Dataset.from_json(_wanted(attributes))
            by_uid[str(ds.get("SOPInstanceUID", ""))] = (ds, attributes)
    ordered = display_order(ds for ds, _ in by_uid.values())
    if not ordered:
        raise HTTPException(404, "No images in this series.")
    images, shown = [], []
    for ds in ordered:
        is_palette = str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR"
        metadata = by_uid[str(ds.SOPInstanceUID)][1]
        palette = await _palette(metadata, archive) if is_palette and metadata is not None else None
        try:
            images.append(describe(ds, palette))
        except Undecodable as error:  # a header no frame can be decoded from: left out, like a non-image
            log.info("series images: an instance left out (%s)", error.reason)
            continue
        shown.append(ds)
        source.remember(str(ds.SOPInstanceUID), PixelFormat.from_dataset(ds))
    if not images:
        raise HTTPException(422, "this series cannot be decoded: no image in it has a usable header")
    source.warm(study_uid, series_uid, first_instance=images[0]["instance_uid"])
    return _series_answer(study_uid, series_uid, shown[0], images, complete=True)


async def _headers_from_load(
    archive: Archive, source: FrameSource, study_uid: str, series_uid: str
) -> dict[str, tuple[Dataset, dict[str, Any] | None]] | None:
    """The series' images as its background load parsed them (starting one if none is on its way), when
    that load read every file Orthanc's index lists and none is a palette image (whose lookup tables come
    as bulk data URIs); else None, and Orthanc's series metadata is asked for. Orthanc then reads the files
    once (for the frames) rather than twice, while the viewport waits for both."""
    listed = await archive.indexed_instances(study_uid, series_uid)
    if listed:
        source.warm(study_uid, series_uid)
    headers = await source.series_headers(series_uid)
    if not listed or any(item.instance_uid not in headers for item in listed):
        return None
    found = [headers[item.instance_uid] for item in listed]
    if any(str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR" for ds in found):
        return None
    return {str(ds.SOPInstanceUID): (ds, None) for ds in found}


async def first_image(
    archive: Archive, source: FrameSource, study_uid: str, series_uid: str
) -> dict[str, Any] | None:
    """The first image in display order, from Orthanc's index (geometry, instance numbers) and that one
    instance's metadata: a few milliseconds, where the whole series' metadata means reading every file
    (200-500 ms for 200 CT slices). The viewport draws it while the rest is on its way, and the series'
    frames start loading now, while the viewport waits for the rest of the description.
    None when this shortcut does not apply (a palette image, which needs its lookup tables fetched)."""
    listed = await archive.indexed_instances(study_uid, series_uid)
    if not listed:
        raise HTTPException(404, "No images in this series.")
    ordered = in_display_order(listed, indexed_place)
    lowest = ordered[0]
    source.warm(study_uid, series_uid, first_instance=lowest.instance_uid)
    ds = await archive.instance_metadata(study_uid, series_uid, lowest.instance_uid)
    if ds is None:
        raise HTTPException(404, "No images in this series.")
    if str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        return None
    try:
        described = describe(ds, None)
    except Undecodable:  # the whole series' description leaves it out and says what remains
        return None
    return _series_answer(study_uid, series_uid, ds, [described], complete=False)


def _series_answer(
    study_uid: str, series_uid: str, first: Dataset, images: list[dict[str, Any]], complete: bool
) -> dict[str, Any]:
    return {
        "study_uid": study_uid,
        "series_uid": series_uid,
        "modality": text_value(first, "Modality"),
        "info": overlay_info(first),
        "images": images,
        "complete": complete,  # False: only the first image; ask again without ``first`` for the rest
    }
