"""The worklist: studies in the archive, found through the platform's QIDO-RS client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydicom import Dataset

from openaim import audit
from viewer.deps import ArchiveClient, Audit, Reader
from viewer.dicom_text import dicom_date, person_name, text_value
from viewer.templates import render

router = APIRouter()

SearchText = Annotated[str, Query(max_length=64, pattern=r"^[^\\\x00-\x1f]*$")]


@dataclass(frozen=True)
class WorklistRow:
    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    modalities: str
    description: str
    accession: str
    images: str

    @classmethod
    def from_dataset(cls, study: Dataset) -> WorklistRow:
        return cls(
            study_uid=str(study.StudyInstanceUID),
            patient_name=person_name(study.get("PatientName")),
            patient_id=text_value(study, "PatientID"),
            study_date=dicom_date(study.get("StudyDate")),
            modalities=text_value(study, "ModalitiesInStudy"),
            description=text_value(study, "StudyDescription"),
            accession=text_value(study, "AccessionNumber"),
            images=text_value(study, "NumberOfStudyRelatedInstances"),
        )


@router.get("/")
def home() -> Response:
    return RedirectResponse("/worklist", status_code=303)


@router.get("/worklist")
async def worklist(
    request: Request,
    _: Reader,
    archive: ArchiveClient,
    trail: Audit,
    patient_id: SearchText = "",
    accession: SearchText = "",
    modality: Annotated[str, Query(max_length=16, pattern=r"^[A-Z]*$")] = "",
) -> Response:
    filters = {"PatientID": patient_id, "AccessionNumber": accession, "ModalitiesInStudy": modality}
    studies = await archive.search_studies(filters)
    rows = sorted(
        (WorklistRow.from_dataset(study) for study in studies),
        key=lambda row: row.study_date,
        reverse=True,
    )
    trail.record(
        audit.EventType.QUERY,
        action=audit.Action.EXECUTE,
        detail={"scope": "worklist", "filters": {k: v for k, v in filters.items() if v}},
    )
    template = "worklist_rows.html" if request.headers.get("HX-Request") else "worklist.html"
    return render(request, template, rows=rows, filters=filters)
