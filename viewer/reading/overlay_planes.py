"""Overlay planes (PS3.3 C.9.2, groups 60xx): a lesion outline or a marker stored beside the pixels as a
1-bit plane. The viewport learns which instances and frames carry which planes from ``overlay_planes``
(one metadata request for the series) and draws each plane from a PNG the platform renders: the image's
size, the overlay's origin applied, white where the plane is set and transparent elsewhere.

The Overlay module has no colour attribute (a colour comes only with a presentation state), so planes are
drawn white, as most viewers do. Overlays embedded in unused bits of Pixel Data (retired) are not read.
"""

from __future__ import annotations

import asyncio
import io
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import Response
from PIL import Image
from pydicom import Dataset

from inference.runtime.pixels import MAX_PIXELS_PER_FRAME, UnreadableImage, read_dataset
from viewer.access.deps import ArchiveClient, ImageReader, Reader
from viewer.archive.uids import InstanceUID, SeriesUID, StudyUID
from viewer.reading.ai_policy import ShownSeries
from viewer.reading.frame_encoding import Undecodable
from viewer.reading.pictures import PRIVATE_IMMUTABLE

router = APIRouter(prefix="/api")

FIRST_GROUP, LAST_GROUP = 0x6000, 0x601E  # the 16 repeating groups: even numbers from 6000 to 601E
WHITE = (255, 255, 255, 255)
OverlayGroup = Annotated[str, PathParam(pattern=r"^60[01][02468ACEace]$")]
FrameNumber = Annotated[int, PathParam(ge=1, le=999_999)]


def overlay_groups_in(tags: Any) -> list[int]:
    """The groups whose Overlay Data is present (tags as DICOM JSON keys or as pydicom tags)."""
    groups = set()
    for tag in tags:
        number = int(tag, 16) if isinstance(tag, str) else int(tag)
        group, element = number >> 16, number & 0xFFFF
        if FIRST_GROUP <= group <= LAST_GROUP and group % 2 == 0 and element == 0x3000:
            groups.add(group)
    return sorted(groups)


def _value(item: dict[str, Any], group: int, element: int, default: Any = None) -> list[Any] | Any:
    found = item.get(f"{group:04X}{element:04X}", {}).get("Value")
    return found if found else default


def plane(item: dict[str, Any], group: int, image_frames: int) -> dict[str, Any] | None:
    """One plane as the viewport needs it, from an instance's DICOM JSON; None without its size."""
    rows, columns = _value(item, group, 0x0010, [None])[0], _value(item, group, 0x0011, [None])[0]
    if not rows or not columns:
        return None
    count = int(_value(item, group, 0x0015, ["1"])[0] or 1)
    first = int(_value(item, group, 0x0051, [1])[0] or 1)
    # A single-frame overlay on a multi-frame image applies to every frame (PS3.3 C.9.3.1.1).
    frames = list(range(1, image_frames + 1)) if count == 1 and image_frames > 1 and first == 1 else []
    frames = frames or [f for f in range(first, first + count) if 1 <= f <= image_frames]
    return {
        "group": f"{group:04X}",
        "type": str(_value(item, group, 0x0040, ["G"])[0]).strip(),
        "description": str(_value(item, group, 0x0022, [""])[0]),
        "label": str(_value(item, group, 0x1500, [""])[0]),
        "frames": frames,
    }


def instance_planes(item: dict[str, Any]) -> list[dict[str, Any]]:
    """Every drawable plane of one instance's DICOM JSON."""
    image_frames = int(_value(item, 0x0028, 0x0008, ["1"])[0] or 1)
    found = (plane(item, group, image_frames) for group in overlay_groups_in(item))
    return [one for one in found if one is not None and one["frames"]]


@router.get("/studies/{study_uid}/series/{series_uid}/overlay-planes")
async def overlay_planes(
    study_uid: StudyUID, series_uid: SeriesUID, _: Reader, shown: ShownSeries, archive: ArchiveClient
) -> dict[str, list[dict[str, Any]]]:
    """Per SOP Instance UID, its overlay planes (only instances that have some)."""
    answer = {}
    for item in await archive.series_metadata(study_uid, series_uid):
        uid = str((_value(item, 0x0008, 0x0018, [""]))[0])
        if uid and (planes := instance_planes(item)):
            answer[uid] = planes
    return answer


def overlay_rgba(ds: Dataset, group: int, frame: int) -> np.ndarray:
    """The plane over image frame ``frame`` (1-based) as an RGBA image of the image's size: the overlay's
    origin (1-based, may be negative) applied and clipped; transparent where the plane is 0."""
    if group not in overlay_groups_in(ds.keys()):
        raise LookupError("no such overlay plane")
    _check_sizes(ds, group)
    bits = np.asarray(ds.overlay_array(group))
    if bits.ndim == 3:
        index = frame - int(ds.get((group, 0x0051)).value if (group, 0x0051) in ds else 1)
        if not 0 <= index < bits.shape[0]:
            raise LookupError("the overlay does not cover this frame")
        bits = bits[index]
    rows, columns = int(ds.Rows), int(ds.Columns)
    origin = ds.get((group, 0x0050))
    top, left = (int(origin.value[0]) - 1, int(origin.value[1]) - 1) if origin is not None else (0, 0)
    rgba = np.zeros((rows, columns, 4), dtype=np.uint8)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + bits.shape[0], rows), min(left + bits.shape[1], columns)
    if r1 > r0 and c1 > c0:
        window = bits[r0 - top : r1 - top, c0 - left : c1 - left] != 0
        rgba[r0:r1, c0:c1][window] = WHITE
    return rgba


def _check_sizes(ds: Dataset, group: int) -> None:
    """Before anything is allocated: the image and the plane within the pixels this platform decodes (a
    header may claim 65535 x 65535), and the plane's data as long as its size needs."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    plane_rows, plane_columns = int(ds[group, 0x0010].value), int(ds[group, 0x0011].value)
    frames = int(ds[group, 0x0015].value or 1) if (group, 0x0015) in ds else 1
    for what, pixels in (("image", rows * columns), ("overlay plane", plane_rows * plane_columns)):
        if pixels > MAX_PIXELS_PER_FRAME:
            raise Undecodable(
                f"the {what} claims {pixels} pixels, more than the {MAX_PIXELS_PER_FRAME} drawn here"
            )
    needed = (plane_rows * plane_columns * max(1, frames) + 7) // 8
    held = len(ds[group, 0x3000].value or b"")
    if held < needed:
        raise Undecodable(f"the overlay data holds {held} bytes; its size needs {needed}")


def _png(data: bytes, group: int, frame: int) -> bytes:
    ds = read_dataset(data)
    rgba = overlay_rgba(ds, group, frame)
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/overlays/{group}/{frame}.png")
async def overlay_png(
    study_uid: StudyUID,
    series_uid: SeriesUID,
    instance_uid: InstanceUID,
    group: OverlayGroup,
    frame: FrameNumber,
    _: ImageReader,
    shown: ShownSeries,
    archive: ArchiveClient,
) -> Response:
    """One overlay plane over one frame, ready to lay over the image."""
    data = await archive.retrieve_instance(study_uid, series_uid, instance_uid)
    try:
        png = await asyncio.to_thread(_png, data, int(group, 16), frame)
    except Undecodable as error:
        raise HTTPException(422, str(error)) from error
    except (LookupError, UnreadableImage, ValueError, AttributeError) as error:
        raise HTTPException(404, f"No such overlay plane: {error}") from error
    return Response(png, media_type="image/png", headers=PRIVATE_IMMUTABLE)
