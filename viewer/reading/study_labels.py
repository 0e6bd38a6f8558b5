"""What people know a study by: its accession, date and description, for pages that list studies a
reviewer or reader meets again (the review queue, the feedback history) instead of a 64-character UID.

Read from the platform's study index in one query per page, never from the archive. A study the index
does not hold (it left the archive) has no label, and the page falls back to its UID.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.study_index import IndexedStudy
from viewer.archive.dicom_text import dicom_date


@dataclass(frozen=True)
class StudyLabel:
    accession: str
    study_date: str  # YYYY-MM-DD, or ""
    description: str


def study_labels(db: Session, study_uids: Iterable[str]) -> dict[str, StudyLabel]:
    """Each indexed study's label, by Study Instance UID."""
    wanted = sorted(set(study_uids))
    if not wanted:
        return {}
    index = IndexedStudy
    rows = db.execute(
        select(index.study_uid, index.accession, index.study_date, index.description).where(
            index.study_uid.in_(wanted)
        )
    )
    return {uid: StudyLabel(number, dicom_date(date), text) for uid, number, date, text in rows}
