"""The worklist: studies in the archive (QIDO-RS through the platform) with what the platform knows about
each (AI status, triage flag, read status), urgent first, then oldest first. It refreshes itself."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BeforeValidator
from pydicom import Dataset

from openaim import audit
from viewer.access.deps import ArchiveClient, Audit, DbSession, Reader
from viewer.archive.client import Archive
from viewer.archive.dicom_text import dicom_date, person_name, text_value
from viewer.reading.study_status import AIStatus, StudyStatus, Triage, study_statuses
from viewer.templates import render

router = APIRouter()

SearchText = Annotated[str, Query(max_length=64, pattern=r"^[^\\\x00-\x1f]*$")]
# A filter form sends its empty fields as "": that means "any", not a malformed value.
BlankIsNone = BeforeValidator(lambda value: value or None)
REFRESH_TRIGGER = "worklist-rows"  # the table body polls itself; its refreshes are not new queries
MODALITIES = ("CR", "DX", "CT", "MR", "US", "MG", "PT", "NM", "XA")


@dataclass(frozen=True)
class WorklistRow:
    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_time: str
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
            study_time=text_value(study, "StudyTime"),
            modalities=text_value(study, "ModalitiesInStudy"),
            description=text_value(study, "StudyDescription"),
            accession=text_value(study, "AccessionNumber"),
            images=text_value(study, "NumberOfStudyRelatedInstances"),
        )


@dataclass(frozen=True)
class Filters:
    q: str = ""  # patient ID or accession number; DICOM wildcards (* and ?) allowed
    modality: str = ""
    date_from: date | None = None
    date_to: date | None = None
    flag: Triage | None = None
    ai: AIStatus | None = None
    read: bool | None = None

    def archive_queries(self) -> list[dict[str, str]]:
        """QIDO-RS has no OR: a search text is one query on patient ID and one on accession number."""
        common = {"ModalitiesInStudy": self.modality, "StudyDate": self._date_range()}
        if not self.q:
            return [common]
        return [{**common, "PatientID": self.q}, {**common, "AccessionNumber": self.q}]

    def _date_range(self) -> str:
        if self.date_from is None and self.date_to is None:
            return ""
        start = self.date_from.strftime("%Y%m%d") if self.date_from else ""
        end = self.date_to.strftime("%Y%m%d") if self.date_to else ""
        return f"{start}-{end}"

    def keeps(self, status: StudyStatus) -> bool:
        return (
            (self.flag is None or status.triage is self.flag)
            and (self.ai is None or status.ai is self.ai)
            and (self.read is None or status.read is self.read)
        )

    def in_audit(self) -> dict[str, str]:
        asked = {"search": self.q, "modality": self.modality, "from": str(self.date_from or "")}
        asked |= {"to": str(self.date_to or ""), "flag": self.flag or "", "ai": self.ai or ""}
        asked["read"] = "" if self.read is None else str(self.read).lower()
        return {key: value for key, value in asked.items() if value}


@dataclass(frozen=True)
class Entry:
    study: WorklistRow
    status: StudyStatus


async def find_studies(archive: Archive, filters: Filters) -> list[WorklistRow]:
    answers = await asyncio.gather(*(archive.search_studies(query) for query in filters.archive_queries()))
    found = {row.study_uid: row for answer in answers for row in map(WorklistRow.from_dataset, answer)}
    return list(found.values())


def worklist_order(entry: Entry) -> tuple[int, str, str]:
    """Urgent first, then oldest first (the one waiting longest)."""
    return entry.status.triage.rank, entry.study.study_date or "9999", entry.study.study_time


@router.get("/")
def home() -> Response:
    return RedirectResponse("/worklist", status_code=303)


@router.get("/worklist")
async def worklist(
    request: Request,
    _: Reader,
    archive: ArchiveClient,
    db: DbSession,
    trail: Audit,
    q: SearchText = "",
    modality: Annotated[str, Query(max_length=16, pattern=r"^[A-Z]*$")] = "",
    date_from: Annotated[date | None, BlankIsNone] = None,
    date_to: Annotated[date | None, BlankIsNone] = None,
    flag: Annotated[Triage | None, BlankIsNone] = None,
    ai: Annotated[AIStatus | None, BlankIsNone] = None,
    read: Annotated[bool | None, BlankIsNone] = None,
) -> Response:
    filters = Filters(q.strip(), modality, date_from, date_to, flag, ai, read)
    studies = await find_studies(archive, filters)
    statuses = study_statuses(db, [study.study_uid for study in studies])
    entries = sorted(
        (
            Entry(study, statuses[study.study_uid])
            for study in studies
            if filters.keeps(statuses[study.study_uid])
        ),
        key=worklist_order,
    )
    if request.headers.get("HX-Trigger") != REFRESH_TRIGGER:
        trail.record(
            audit.EventType.QUERY,
            action=audit.Action.EXECUTE,
            detail={"scope": "worklist", "filters": filters.in_audit()},
        )
    template = "reading/worklist_rows.html" if request.headers.get("HX-Request") else "reading/worklist.html"
    return render(
        request,
        template,
        entries=entries,
        filters=filters,
        modalities=MODALITIES,
        flags=list(Triage),
        ai_states=list(AIStatus),
    )
