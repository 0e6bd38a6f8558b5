"""The study page: series thumbnails, the canvas viewport (frontend/static/reading/viewport.js) and the AI
panel.

The page is a shell: the viewport asks /api/.../images for the shown series and draws its frames itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydicom import Dataset

from openaim import audit
from viewer.access.deps import ArchiveClient, Audit, DbSession, Reader
from viewer.archive.client import Archive
from viewer.archive.dicom_text import text_value
from viewer.archive.uids import OptionalSeriesUID, StudyUID
from viewer.reading.ai_policy import StudySeriesFilter
from viewer.reading.archived_study import ArchivedStudy
from viewer.reading.frames import Frames, FrameSource
from viewer.reading.images import first_image
from viewer.reading.next_study import next_unread
from viewer.reading.reads import ai_hidden, mark_read
from viewer.reading.slice_order import SlicePlace, in_display_order, indexed_place
from viewer.reading.worklist import WorklistRow
from viewer.templates import render

# Series without pixels to render as images (results, documents, key objects, presentation states).
NON_IMAGE_MODALITIES = frozenset({"SR", "SEG", "KO", "PR", "DOC", "RWV", "REG", "PLAN"})
# AI results and the readers' feedback on them, ours and other vendors': the AI panel shows what they hold,
# so the page names them as results beside the images, never as images nor as "not an image" tiles.
AI_RESULT_MODALITIES = frozenset({"SR", "SEG"})
THUMBNAIL_PIXELS = 128


@dataclass(frozen=True)
class SeriesRow:
    series_uid: str
    modality: str
    number: str
    description: str
    instances: str
    body_part: str
    thumbnail_uid: str | None = None  # the middle image, drawn by the platform (viewer/reading/pictures.py)

    @property
    def has_images(self) -> bool:
        return self.modality not in NON_IMAGE_MODALITIES

    @property
    def is_ai_result(self) -> bool:
        return self.modality in AI_RESULT_MODALITIES

    @classmethod
    def from_dataset(cls, series: Dataset, thumbnail_uid: str | None = None) -> SeriesRow:
        return cls(
            series_uid=str(series.SeriesInstanceUID),
            modality=text_value(series, "Modality"),
            number=text_value(series, "SeriesNumber"),
            description=text_value(series, "SeriesDescription"),
            instances=text_value(series, "NumberOfSeriesRelatedInstances"),
            body_part=text_value(series, "BodyPartExamined"),
            thumbnail_uid=thumbnail_uid,
        )


def image_modalities(rows: Iterable[SeriesRow], study_modalities: str) -> str:
    """The modalities of the study's images, in series order, written as the worklist writes several
    ("CT/MR"); the archive's list (ModalitiesInStudy, which names SR and SEG too) only when no series has
    images."""
    found = dict.fromkeys(row.modality for row in rows if row.has_images and row.modality)
    if found:
        return "/".join(found)
    return "/".join(part for part in study_modalities.split("/") if part not in AI_RESULT_MODALITIES)


def middle_images(instances: Iterable[tuple[str, SlicePlace]]) -> dict[str, str]:
    """(series UID, place) of each instance -> for each series, the UID of the instance in its middle in
    display order."""
    by_series: dict[str, list[SlicePlace]] = defaultdict(list)
    for series_uid, place in instances:
        by_series[series_uid].append(place)
    return {
        series_uid: in_display_order(places, lambda place: place)[len(places) // 2].uid
        for series_uid, places in by_series.items()
    }


router = APIRouter()


async def _first_image(
    archive: Archive, source: FrameSource, study_uid: str, series_uid: str
) -> dict[str, Any] | None:
    """The shown series' first image description, or None (the viewport then asks for it itself); its
    frames start loading as the page goes out."""
    try:
        return await first_image(archive, source, study_uid, series_uid)
    except HTTPException:  # no images in the series: the viewport says so
        return None


@router.get("/studies/{study_uid}")
async def study_page(
    request: Request,
    study_uid: StudyUID,
    _: Reader,
    shown_series: StudySeriesFilter,
    archive: ArchiveClient,
    source: Frames,
    trail: Audit,
    series: OptionalSeriesUID = None,
) -> Response:
    found = await archive.find_study(study_uid)
    if found is None:
        raise HTTPException(404, "No study with this UID is in the archive.")
    instances = await archive.indexed_instances(study_uid)
    middle = middle_images((item.series_uid, indexed_place(item)) for item in instances)
    series_rows = sorted(
        (
            SeriesRow.from_dataset(item, middle.get(str(item.SeriesInstanceUID)))
            for item in await archive.search_series(study_uid)
            if shown_series.shows(str(item.SeriesInstanceUID))  # the AI policy: others as if absent
        ),
        key=lambda row: (not row.has_images, row.number.zfill(6)),
    )
    shown = next((row for row in series_rows if row.series_uid == series), None)
    if series is not None and shown is None:
        raise HTTPException(404, "No series with this UID is in the study.")
    shown = shown or next((row for row in series_rows if row.has_images), None)
    if shown is not None and not shown.has_images:
        shown = None
    shown_instances = sum(1 for item in instances if shown and item.series_uid == shown.series_uid)
    trail.record(
        audit.EventType.INSTANCES_ACCESSED,
        action=audit.Action.READ,
        object_uid=study_uid,
        detail={"series": shown.series_uid if shown else None, "instances": shown_instances},
    )
    first = await _first_image(archive, source, study_uid, shown.series_uid) if shown is not None else None
    study = WorklistRow.from_dataset(found)
    return render(
        request,
        "reading/study.html",
        first_image=first,
        study=study,
        modalities=image_modalities(series_rows, study.modalities),
        series_rows=[row for row in series_rows if not row.is_ai_result],
        ai_rows=[row for row in series_rows if row.is_ai_result],
        shown=shown,
        thumbnail_pixels=THUMBNAIL_PIXELS,
    )


@router.post("/api/studies/{study_uid}/done")
def study_done(
    study_uid: StudyUID, user: Reader, _archived: ArchivedStudy, db: DbSession, trail: Audit
) -> dict[str, Any]:
    """Done on the AI panel: the reader has read the study. Answers the next unread study in worklist
    order (None when every study is read), which the panel offers as a button and a key."""
    if ai_hidden(db, user, study_uid):  # Done is for after the AI: a blinded read starts with an impression
        raise HTTPException(403, "Blinded read: record your impression of the study first.")
    if mark_read(db, user, study_uid) is not None:
        trail.record(
            audit.EventType.STUDY_IMPRESSION,
            action=audit.Action.CREATE,
            object_uid=study_uid,
            detail={"impression": None, "done": True, "ai_visible": True},
        )
    found = next_unread(db, after=study_uid)
    if found is None:
        return {"next": None}
    row, status = found
    return {
        "next": {
            "study_uid": row.study_uid,
            "url": f"/studies/{quote(row.study_uid, safe='.')}",
            "patient_name": row.patient_name,
            "patient_id": row.patient_id,
            "study_date": row.study_date,
            "description": row.description,
            "accession": row.accession,
            "triage": status.triage.value,
        }
    }
