"""The platform's own index of the studies in the archive: one row per study, what the worklist sorts,
filters and pages on in SQL (and what monitoring will group by: sex, age, manufacturer, station...).

A row is read from Orthanc's index once per change of the study (three REST calls: the study, its series,
one image's attributes), never per page view. Its last four columns are the worklist's state of the study
(AI status, triage flag, read); database triggers keep them (migration 0006), whichever code writes the
jobs, results, model modes and reads they come from, so that "urgent first" can be an index.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, SmallInteger, String, delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from inference.archive import InferenceArchive
from openaim.db import Base, UTCDateTime, utcnow

# Objects that are not images: their series never name the study's modality (our own AI results, SR
# and SEG, first of all). A study holding nothing else shows what it holds.
NOT_IMAGES = frozenset(
    {"SR", "SEG", "KO", "PR", "DOC", "REG", "RWV", "FID", "RTSTRUCT", "RTPLAN", "RTRECORD", "PLAN"}
)
NO_FLAG_RANK = 3  # Triage.NONE's rank: urgent 0, priority 1, routine 2
UNDATED = "99999999"  # a study without a date waits longest of all: it sorts after every dated one


class IndexedStudy(Base):
    __tablename__ = "studies"
    __table_args__ = (
        # The worklist's order (urgent first, then oldest first) and its filters, each with that order
        # behind it, so a page is read from an index and never sorted.
        Index("ix_studies_worklist", "triage_rank", "waiting_since", "id"),
        Index("ix_studies_ai_status_worklist", "ai_status", "triage_rank", "waiting_since", "id"),
        Index("ix_studies_was_read_worklist", "was_read", "triage_rank", "waiting_since", "id"),
        Index("ix_studies_modalities_worklist", "modalities", "triage_rank", "waiting_since", "id"),
        # "unread, these days": the days' few rows, not every unread study
        Index("ix_studies_was_read_study_date", "was_read", "study_date"),
        # The search: an exact ID, or a DICOM wildcard with a fixed start (A0000002*). PostgreSQL uses a
        # b-tree for LIKE 'A0000002%' only with the pattern operator class (migration 0009); without it, a
        # million-study search walked the worklist order and took 5 s. SQLite's GLOB uses a plain index.
        Index("ix_studies_patient_id", "patient_id", postgresql_ops={"patient_id": "varchar_pattern_ops"}),
        Index("ix_studies_accession", "accession", postgresql_ops={"accession": "varchar_pattern_ops"}),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Orthanc's ID (a hash of patient ID and study UID): what its Deleted change names
    orthanc_id: Mapped[str] = mapped_column(String(64), unique=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    patient_name: Mapped[str] = mapped_column(String(200), default="")  # as DICOM writes it: DOE^JANE
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    accession: Mapped[str] = mapped_column(String(64), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)  # YYYYMMDD or ""
    study_time: Mapped[str] = mapped_column(String(16), default="")
    waiting_since: Mapped[str] = mapped_column(String(24), default=UNDATED)  # date + time, the sort key
    modalities: Mapped[str] = mapped_column(String(64), default="")  # of the images, backslash-separated
    description: Mapped[str] = mapped_column(String(200), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    age: Mapped[str] = mapped_column(String(16), default="")  # PatientAge as written: 045Y
    manufacturer: Mapped[str] = mapped_column(String(64), default="")
    model: Mapped[str] = mapped_column(String(64), default="")  # ManufacturerModelName
    station: Mapped[str] = mapped_column(String(64), default="")
    institution: Mapped[str] = mapped_column(String(64), default="")
    view_position: Mapped[str] = mapped_column(String(16), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")
    images: Mapped[int] = mapped_column(default=0)  # instances in its image series
    indexed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # The worklist's state, kept by triggers (migration 0006): clinical model versions only
    triage_rank: Mapped[int] = mapped_column(SmallInteger, default=NO_FLAG_RANK)
    triage_failed: Mapped[bool] = mapped_column(Boolean, default=False)  # the flag's results all failed
    ai_status: Mapped[str] = mapped_column(String(16), default="waiting")
    was_read: Mapped[bool] = mapped_column(Boolean, default=False)


@dataclass(frozen=True)
class StudyRecord:
    """What the index keeps of a study, as read from Orthanc."""

    orthanc_id: str
    study_uid: str
    patient_name: str = ""
    patient_id: str = ""
    accession: str = ""
    study_date: str = ""
    study_time: str = ""
    modalities: str = ""
    description: str = ""
    sex: str = ""
    age: str = ""
    manufacturer: str = ""
    model: str = ""
    station: str = ""
    institution: str = ""
    view_position: str = ""
    body_part: str = ""
    images: int = 0

    def row(self) -> dict[str, Any]:
        """Column values, each cut to its column's length (DICOM strings may be longer than the standard
        allows, and PostgreSQL refuses what does not fit)."""
        values: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str):
                length = getattr(IndexedStudy.__table__.c[field.name].type, "length", None)
                value = value[:length] if length else value
            values[field.name] = value
        values["waiting_since"] = (self.study_date or UNDATED) + self.study_time[:16]
        values["indexed_at"] = utcnow()
        return values


def read_study(archive: InferenceArchive, study_id: str) -> StudyRecord:
    """A study's record from Orthanc: three REST calls (raises NotInArchive once it is gone)."""
    study = archive.study(study_id)
    series = archive.study_series_listed(study_id)
    images = [item for item in series if _modality(item) not in NOT_IMAGES]
    first = next((item["Instances"][0] for item in images if item.get("Instances")), None)
    image = archive.instance_tags(first) if first is not None else {}
    return record_of(study_id, study, series, image)


def record_of(
    study_id: str, study: dict[str, Any], series: list[dict[str, Any]], image: dict[str, Any]
) -> StudyRecord:
    """The record from Orthanc's answers: the study (with its patient's tags), its series, and one image's
    attributes (the series-level ones: manufacturer, station, view...)."""
    tags, patient = study.get("MainDicomTags", {}), study.get("PatientMainDicomTags", {})
    images = [item for item in series if _modality(item) not in NOT_IMAGES]
    shown = images or series  # a study of SRs alone says so
    modalities = sorted({_modality(item) for item in shown} - {""})
    return StudyRecord(
        orthanc_id=study_id,
        study_uid=_text(tags.get("StudyInstanceUID")),
        patient_name=_text(patient.get("PatientName")),
        patient_id=_text(patient.get("PatientID")),
        accession=_text(tags.get("AccessionNumber")),
        study_date=_date(tags.get("StudyDate")),
        study_time=_text(tags.get("StudyTime")),
        modalities="\\".join(modalities),
        description=_text(tags.get("StudyDescription")),
        sex=_text(image.get("PatientSex") or patient.get("PatientSex")),
        age=_text(image.get("PatientAge")),
        manufacturer=_text(image.get("Manufacturer")),
        model=_text(image.get("ManufacturerModelName")),
        station=_text(image.get("StationName")),
        institution=_text(image.get("InstitutionName") or tags.get("InstitutionName")),
        view_position=_text(image.get("ViewPosition")),
        body_part=_text(image.get("BodyPartExamined")),
        images=sum(len(item.get("Instances", [])) for item in images),
    )


def save(db: Session, records: list[StudyRecord]) -> None:
    """Insert or update these studies' rows (the worklist state columns are the triggers' to keep)."""
    if not records:
        return
    insert = sqlite_insert if db.get_bind().dialect.name == "sqlite" else postgresql_insert
    statement = insert(IndexedStudy).values([record.row() for record in records])
    kept = {column: statement.excluded[column] for column in records[0].row() if column != "orthanc_id"}
    db.execute(statement.on_conflict_do_update(index_elements=["orthanc_id"], set_=kept))


def forget(db: Session, study_ids: list[str]) -> None:
    """Remove the rows of studies that left the archive."""
    if study_ids:
        db.execute(delete(IndexedStudy).where(IndexedStudy.orthanc_id.in_(study_ids)))


def indexed_ids(db: Session) -> set[str]:
    return set(db.scalars(select(IndexedStudy.orthanc_id)))


def _modality(series: dict[str, Any]) -> str:
    return _text(series.get("MainDicomTags", {}).get("Modality")).upper()


def _text(value: Any) -> str:
    """A DICOM value as one line of text (a multi-valued one joined with backslashes, as DICOM does)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "\\".join(_text(item) for item in value)
    return str(value).strip()


def _date(value: Any) -> str:
    text = _text(value)
    return text if len(text) == 8 and text.isdigit() else ""
