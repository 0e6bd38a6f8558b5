"""The next study a reader should open once they are done with one: the first unread study in worklist
order (urgent first, then the one waiting longest), from the platform's study index, so it is the study
the worklist would put on top, whichever page that is on."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.study_index import IndexedStudy
from viewer.reading.study_status import StudyStatus
from viewer.reading.worklist import WORKLIST_ORDER, WorklistRow, status_of


def next_unread(db: Session, after: str) -> tuple[WorklistRow, StudyStatus] | None:
    """The first unread study in worklist order other than ``after`` (the one just read), or None."""
    query = (
        select(IndexedStudy)
        .where(IndexedStudy.was_read.is_(False), IndexedStudy.study_uid != after)
        .order_by(*WORKLIST_ORDER)
        .limit(1)
    )
    found = db.scalar(query)
    return None if found is None else (WorklistRow.from_index(found), status_of(found))
