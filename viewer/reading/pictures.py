"""Pictures the platform draws itself from the stored file: series thumbnails and the images of a review
meeting. The 8-bit image a reader sees (modality LUT, the file's window, MONOCHROME1, any transfer syntax:
inference.runtime.pixels), never Orthanc's /rendered, which ignores the file's window and decodes JPEG 2000
through GDCM, the library that crashed Orthanc when asked to transcode some JPEG 2000 files.

Drawing a thumbnail fetches and decodes the whole instance (tens of milliseconds for a chest X-ray), so the
drawn PNGs are kept in a bounded LRU, and the browser is told it may keep them: they never change.
"""

from __future__ import annotations

import asyncio
import io
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from PIL import Image

from inference.runtime.pixels import UnreadableImage, display_frame, read_dataset, representative_frame
from viewer.access.deps import ArchiveClient, ImageReader
from viewer.archive.client import Archive
from viewer.archive.uids import InstanceUID, SeriesUID, StudyUID
from viewer.reading.ai_policy import ShownSeries
from viewer.reading.bytes_lru import BytesLRU

router = APIRouter(prefix="/api")

PRIVATE_IMMUTABLE = {"cache-control": "private, max-age=3600"}  # the pixels of an instance UID never change
THUMBNAIL_CACHING = {"cache-control": "private, max-age=86400, immutable"}


async def picture_png(
    archive: Archive, study_uid: str, series_uid: str, instance_uid: str, size: int | None = None
) -> bytes:
    """The instance's representative frame as a greyscale PNG, at most ``size`` pixels on a side."""
    data = await archive.retrieve_instance(study_uid, series_uid, instance_uid)
    try:
        return await asyncio.to_thread(_draw, data, size)
    except UnreadableImage as error:
        raise HTTPException(404, f"No picture of this object: {error}") from error


def _draw(data: bytes, size: int | None) -> bytes:
    ds = read_dataset(data)
    picture = Image.fromarray(display_frame(ds, representative_frame(ds), min_side=1))
    if size is not None:
        picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


# (Series, SOP Instance UID, size): the series too, so that a picture drawn for a series one user may see
# is never served to another under a series the AI policy lets them see (viewer/reading/ai_policy.py).
ThumbnailKey = tuple[str, str, int]


def get_thumbnails(request: Request) -> BytesLRU[ThumbnailKey]:
    """The app's one cache of drawn thumbnails, made on first use."""
    state = request.app.state
    cache: BytesLRU[ThumbnailKey] | None = getattr(state, "thumbnails", None)
    if cache is None:
        cache = state.thumbnails = BytesLRU(state.settings.viewer_thumbnail_cache_mb * 1024 * 1024)
    return cache


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/thumbnail.png")
async def thumbnail(
    study_uid: StudyUID,
    series_uid: SeriesUID,
    instance_uid: InstanceUID,
    _: ImageReader,
    shown: ShownSeries,
    archive: ArchiveClient,
    drawn: Annotated[BytesLRU[ThumbnailKey], Depends(get_thumbnails)],
    size: Annotated[int, Query(ge=16, le=512)] = 128,
) -> Response:
    png = drawn.get((series_uid, instance_uid, size))
    if png is None:
        png = await picture_png(archive, study_uid, series_uid, instance_uid, size)
        drawn.put((series_uid, instance_uid, size), png)
    return Response(png, media_type="image/png", headers=THUMBNAIL_CACHING)
