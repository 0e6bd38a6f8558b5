"""The worklist: every study in the archive, from the platform's own study index (``inference.study_index``),
with what the platform knows about each (AI status, triage flag, read status), urgent first, then oldest
first. Filtering, ordering, counting and paging all run in SQL over every study, so "urgent first" and
every filter span the whole archive, not the page. It refreshes itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BeforeValidator
from pydicom import Dataset
from sqlalchemy import ColumnElement, func, or_, select, union_all
from sqlalchemy.orm import InstrumentedAttribute, Session

from inference.study_index import IndexedStudy
from openaim import audit
from viewer.access.deps import READ_ROLES, Audit, DbSession, Reader, SignedInUser
from viewer.access.users import Role
from viewer.archive.dicom_text import dicom_date, person_name, text_value
from viewer.reading.study_status import AIStatus, StudyStatus, Triage
from viewer.templates import render

router = APIRouter()

SearchText = Annotated[str, Query(max_length=64, pattern=r"^[^\\\x00-\x1f]*$")]
# A filter form sends its empty fields as "": that means "any", not a malformed value.
BlankIsNone = BeforeValidator(lambda value: value or None)
REFRESH_TRIGGER = "worklist-rows"  # the table body polls itself; its refreshes are not new queries
MODALITIES = ("CR", "DX", "CT", "MR", "US", "MG", "PT", "NM", "XA")
PAGE_SIZE = 100
ESCAPE = "!"  # LIKE's escape character here: not a backslash, which DICOM uses between values
WORKLIST_ORDER = (IndexedStudy.triage_rank, IndexedStudy.waiting_since, IndexedStudy.id)


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
        """From a QIDO-RS answer (the study page asks the archive itself)."""
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

    @classmethod
    def from_index(cls, study: IndexedStudy) -> WorklistRow:
        return cls(
            study_uid=study.study_uid,
            patient_name=person_name(study.patient_name),
            patient_id=study.patient_id,
            study_date=dicom_date(study.study_date),
            study_time=study.study_time,
            modalities=study.modalities.replace("\\", "/"),
            description=study.description,
            accession=study.accession,
            images=str(study.images),
        )


def status_of(study: IndexedStudy) -> StudyStatus:
    """The worklist state the index row holds (kept by database triggers: see migration 0006)."""
    flags = list(Triage)
    return StudyStatus(
        ai=AIStatus(study.ai_status),
        triage=flags[min(study.triage_rank, len(flags) - 1)],
        read=study.was_read,
        triage_failed=study.triage_failed,
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

    def conditions(self, db: Session, modality_sets: list[str] | None = None) -> list[ColumnElement[bool]]:
        """The filters as SQL over the study index, each one an index can answer (``modality_sets``: the
        modality's sets when the caller has already looked them up)."""
        found: list[ColumnElement[bool]] = []
        if self.q:
            sqlite = db.get_bind().dialect.name == "sqlite"
            columns = (IndexedStudy.patient_id, IndexedStudy.accession)
            found.append(or_(*(_matches(column, self.q, sqlite) for column in columns)))
        if self.modality:
            sets = modality_sets_with(db, self.modality) if modality_sets is None else modality_sets
            found.append(IndexedStudy.modalities.in_(sets))
        if self.date_from is not None:
            found.append(IndexedStudy.study_date >= self.date_from.strftime("%Y%m%d"))
        if self.date_to is not None:
            found += [
                IndexedStudy.study_date <= self.date_to.strftime("%Y%m%d"),
                IndexedStudy.study_date != "",
            ]
        if self.flag is not None:
            found.append(IndexedStudy.triage_rank == self.flag.rank)
        if self.ai is not None:
            found.append(IndexedStudy.ai_status == self.ai.value)
        if self.read is not None:
            found.append(IndexedStudy.was_read.is_(self.read))
        return found

    def in_audit(self) -> dict[str, str]:
        asked = {"search": self.q, "modality": self.modality, "from": str(self.date_from or "")}
        asked |= {"to": str(self.date_to or ""), "flag": self.flag or "", "ai": self.ai or ""}
        asked["read"] = "" if self.read is None else str(self.read).lower()
        return {key: value for key, value in asked.items() if value}


def _matches(column: InstrumentedAttribute[str], text: str, sqlite: bool) -> ColumnElement[bool]:
    """DICOM matching, case-sensitive: exact (an index lookup), or with * and ? as wildcards. SQLite's
    GLOB has DICOM's wildcards and uses the index for a fixed start (its LIKE ignores case, and cannot)."""
    if "*" not in text and "?" not in text:
        return column == text
    if sqlite:
        return column.op("GLOB")(text.replace("[", "[[]"))
    escaped = text.replace(ESCAPE, ESCAPE * 2).replace("%", f"{ESCAPE}%").replace("_", f"{ESCAPE}_")
    return column.like(escaped.replace("*", "%").replace("?", "_"), escape=ESCAPE)


def modality_sets_with(db: Session, modality: str) -> list[str]:
    """The studies' modality sets ("CT", "CT\\PT", ...) that hold this modality: a filter by equality on
    a handful of values, which the index answers, where matching inside the text would read every row.
    The sets are few; each is found by one index seek (a loose index scan)."""
    column = IndexedStudy.modalities
    first = select(func.min(column)).scalar_subquery()
    sets = select(first.label("value")).cte("modality_sets", recursive=True)
    following = select(func.min(column)).where(column > sets.c.value).scalar_subquery()
    sets = sets.union_all(select(following).where(sets.c.value.is_not(None)))
    found = db.scalars(select(sets.c.value).where(sets.c.value.is_not(None))).all()
    return [value for value in found if modality in value.split("\\")]


@dataclass(frozen=True)
class Entry:
    study: WorklistRow
    status: StudyStatus


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    number: int  # 1-based
    total: int  # studies matching the filters, in the whole archive

    @property
    def first(self) -> int:
        """The 1-based position of the page's first study ("101-200 of 5,000")."""
        return (self.number - 1) * PAGE_SIZE + 1 if self.entries else 0

    @property
    def last(self) -> int:
        return self.first + len(self.entries) - 1 if self.entries else 0

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


def find_page(db: Session, filters: Filters, number: int = 1) -> Page:
    """One page of the matching studies in worklist order, and how many match in all."""
    sets = modality_sets_with(db, filters.modality) if filters.modality else []
    where = filters.conditions(db, sets)
    total = int(db.scalar(select(func.count()).select_from(IndexedStudy).where(*where)) or 0)
    number = min(number, max(1, -(-total // PAGE_SIZE)))  # past the end: the last page
    start = (number - 1) * PAGE_SIZE
    size = max(0, min(PAGE_SIZE, total - start))
    if start + size > total - start:  # nearer the end: read backwards, skipping fewer rows
        studies = _rows(db, where, sets, total - start - size, size, backwards=True)[::-1]
    else:
        studies = _rows(db, where, sets, start, size, backwards=False)
    entries = [Entry(WorklistRow.from_index(study), status_of(study)) for study in studies]
    return Page(entries, number, total)


def _rows(
    db: Session, where: list[ColumnElement[bool]], sets: list[str], skip: int, size: int, *, backwards: bool
) -> list[IndexedStudy]:
    """``size`` studies after the first ``skip`` in worklist order (or its reverse), walking the index.

    OFFSET reads every skipped row, so the back half of the list is read from its end, and only the ids
    are skipped: they come from the index alone (PostgreSQL reads no table row for them, where asking for
    whole rows fetched every skipped one: 2.8 s for the middle of a million), and the page's rows are
    read afterwards by id. A modality held by several modality sets ("CT", "CT\\PT") is one index range
    per set: each range is read in order up to the page's end and the ranges merged, where a single IN
    would make PostgreSQL sort every match.
    """
    if size == 0:
        return []
    order = [column.desc() if backwards else column.asc() for column in WORKLIST_ORDER]
    if len(sets) < 2:
        ids_query = select(IndexedStudy.id).where(*where).order_by(*order).offset(skip).limit(size)
    else:
        ranges = [
            select(IndexedStudy.id, *WORKLIST_ORDER[:-1])
            .where(*where, IndexedStudy.modalities == value)
            .order_by(*order)
            .limit(skip + size)
            .subquery()
            for value in sets
        ]
        merged = union_all(*(select(*part.c) for part in ranges)).subquery()
        merged_order = [
            merged.c[column.key].desc() if backwards else merged.c[column.key].asc()
            for column in WORKLIST_ORDER
        ]
        ids_query = select(merged.c.id).order_by(*merged_order).offset(skip).limit(size)
    ids = list(db.scalars(ids_query))
    found = {study.id: study for study in db.scalars(select(IndexedStudy).where(IndexedStudy.id.in_(ids)))}
    return [found[study_id] for study_id in ids]


@router.get("/")
def home(user: SignedInUser) -> Response:
    """The worklist; for governance, who reads no images, the Models page."""
    if not user.has_any_role(*READ_ROLES) and user.has_any_role(Role.GOVERNANCE):
        return RedirectResponse("/admin/models", status_code=303)
    return RedirectResponse("/worklist", status_code=303)


@router.get("/worklist")
def worklist(
    request: Request,
    _: Reader,
    db: DbSession,
    trail: Audit,
    q: SearchText = "",
    modality: Annotated[str, Query(max_length=16, pattern=r"^[A-Z]*$")] = "",
    date_from: Annotated[date | None, BlankIsNone] = None,
    date_to: Annotated[date | None, BlankIsNone] = None,
    flag: Annotated[Triage | None, BlankIsNone] = None,
    ai: Annotated[AIStatus | None, BlankIsNone] = None,
    read: Annotated[bool | None, BlankIsNone] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    filters = Filters(q.strip(), modality, date_from, date_to, flag, ai, read)
    found = find_page(db, filters, page)
    if request.headers.get("HX-Trigger") != REFRESH_TRIGGER:
        trail.record(
            audit.EventType.QUERY,
            action=audit.Action.EXECUTE,
            detail={"scope": "worklist", "filters": filters.in_audit()},
        )
    partial = bool(request.headers.get("HX-Request"))
    asked = {key: value for key, value in request.query_params.items() if key != "page"}
    return render(
        request,
        "reading/worklist_rows.html" if partial else "reading/worklist.html",
        entries=found.entries,
        page=found,
        partial=partial,
        query_for=lambda number: urlencode({**asked, "page": str(number)}),
        filters=filters,
        modalities=MODALITIES,
        flags=list(Triage),
        ai_states=list(AIStatus),
    )
