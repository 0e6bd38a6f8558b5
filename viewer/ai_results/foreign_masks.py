"""Mask overlays of other vendors' SEGs: one SEG frame as an RGBA PNG in its segment's colour.

The SEG is read once per process (viewer/ai_results/foreign_results.py caches it), so the viewport's one
request per frame does not download the whole object again. The PNG is private: it shows a patient's anatomy.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydicom import Dataset

from viewer.access.deps import ArchiveClient, Reader
from viewer.ai_results.foreign_results import cached_instance, peek_instance
from viewer.ai_results.foreign_seg import SEGMENTATION_STORAGE, frame_colour, mask_png, number_of_frames
from viewer.archive.uids import InstanceUID, SeriesUID, StudyUID
from viewer.reading.ai_policy import ShownSeries

SegFrameNumber = Annotated[int, Path(ge=1, le=1_000_000, description="1-based SEG frame number")]

router = APIRouter()


@router.get("/api/studies/{study_uid}/foreign/{series_uid}/{instance_uid}/masks/{frame}.png")
async def foreign_mask(
    study_uid: StudyUID,
    series_uid: SeriesUID,
    instance_uid: InstanceUID,
    frame: SegFrameNumber,
    _: Reader,
    shown: ShownSeries,
    archive: ArchiveClient,
) -> Response:
    dataset = peek_instance(study_uid, series_uid, instance_uid)
    if dataset is None:  # first request: ask whether it exists, so that a wrong UID is a 404, not a 502
        listed = await archive.search_instances(study_uid, series_uid)
        if not any(str(item.get("SOPInstanceUID", "")) == instance_uid for item in listed):
            raise HTTPException(404, "No such object in this series.")
        dataset = await cached_instance(archive, study_uid, series_uid, instance_uid)
    if str(dataset.get("SOPClassUID", "")) != SEGMENTATION_STORAGE:
        raise HTTPException(404, "This object is not a segmentation.")
    if frame > number_of_frames(dataset):
        raise HTTPException(404, "The segmentation has no such frame.")
    png = await run_in_threadpool(_render, dataset, frame)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _render(dataset: Dataset, frame: int) -> bytes:
    return mask_png(dataset, frame, frame_colour(dataset, frame))
