"""The study page: the study's series, and the images of one series as server-rendered frames."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydicom import Dataset

from openaim import audit
from viewer.deps import ArchiveClient, Audit, Reader
from viewer.dicom_text import text_value
from viewer.templates import render
from viewer.uids import OptionalSeriesUID, StudyUID
from viewer.worklist import WorklistRow

# Series without pixels to render as images (results, documents, key objects, presentation states).
NON_IMAGE_MODALITIES = frozenset({"SR", "SEG", "KO", "PR", "DOC", "RWV", "REG", "PLAN"})


@dataclass(frozen=True)
class SeriesRow:
    series_uid: str
    modality: str
    number: str
    description: str
    instances: str
    body_part: str

    @property
    def has_images(self) -> bool:
        return self.modality not in NON_IMAGE_MODALITIES

    @classmethod
    def from_dataset(cls, series: Dataset) -> SeriesRow:
        return cls(
            series_uid=str(series.SeriesInstanceUID),
            modality=text_value(series, "Modality"),
            number=text_value(series, "SeriesNumber"),
            description=text_value(series, "SeriesDescription"),
            instances=text_value(series, "NumberOfSeriesRelatedInstances"),
            body_part=text_value(series, "BodyPartExamined"),
        )


@dataclass(frozen=True)
class ImageRow:
    instance_uid: str
    number: int
    frames: int


def _instance_number(instance: Dataset) -> int:
    try:
        return int(instance.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        return 0


router = APIRouter()


@router.get("/studies/{study_uid}")
async def study_page(
    request: Request,
    study_uid: StudyUID,
    _: Reader,
    archive: ArchiveClient,
    trail: Audit,
    series: OptionalSeriesUID = None,
) -> Response:
    found = await archive.find_study(study_uid)
    if found is None:
        raise HTTPException(404, "No study with this UID is in the archive.")
    series_rows = sorted(
        (SeriesRow.from_dataset(item) for item in await archive.search_series(study_uid)),
        key=lambda row: (not row.has_images, row.number.zfill(6)),
    )
    shown = next((row for row in series_rows if row.series_uid == series), None)
    if series is not None and shown is None:
        raise HTTPException(404, "No series with this UID is in the study.")
    shown = shown or next((row for row in series_rows if row.has_images), None)
    images: list[ImageRow] = []
    if shown is not None and shown.has_images:
        instances = await archive.search_instances(study_uid, shown.series_uid)
        images = sorted(
            (
                ImageRow(
                    str(item.SOPInstanceUID),
                    _instance_number(item),
                    int(item.get("NumberOfFrames") or 1),
                )
                for item in instances
            ),
            key=lambda image: image.number,
        )
    trail.record(
        audit.EventType.INSTANCES_ACCESSED,
        action=audit.Action.READ,
        object_uid=study_uid,
        detail={"series": shown.series_uid if shown else None, "instances": len(images)},
    )
    return render(
        request,
        "study.html",
        study=WorklistRow.from_dataset(found),
        series_rows=series_rows,
        shown=shown,
        images=images,
    )
