"""A reader's impression of a study, recorded before or after seeing the AI, and the study read.

In a blinded read the AI stays hidden until the reader records an impression; that unaided impression is
kept as it was given (rows are only ever added), so the AI's influence on readers can be measured later.

A study is read once any reader has a row here: an impression, or "Done" on the AI panel, which reads the
study without saying anything about it (a row with no impression, never counted as one).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from openaim.db import Base, UTCDateTime, utcnow
from viewer.access.users import User


class Impression(StrEnum):
    NORMAL = "normal"
    ABNORMAL = "abnormal"


NO_IMPRESSION = ""  # a read marked Done, with no impression given


class StudyRead(Base):
    __tablename__ = "study_reads"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    impression: Mapped[str] = mapped_column(String(16))
    ai_visible: Mapped[bool] = mapped_column(Boolean)  # False: given blind, before the AI was shown
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


def record_impression(
    db: Session, user: User, study_uid: str, impression: Impression, ai_visible: bool
) -> StudyRead:
    read = StudyRead(study_uid=study_uid, user_id=user.id, impression=impression.value, ai_visible=ai_visible)
    db.add(read)
    db.flush()
    return read


def impressions_of(db: Session, user: User, study_uid: str) -> list[StudyRead]:
    """This reader's impressions of the study, oldest first (the first blind one is the unaided read)."""
    query = select(StudyRead).where(
        StudyRead.study_uid == study_uid, StudyRead.user_id == user.id, StudyRead.impression != NO_IMPRESSION
    )
    return list(db.scalars(query.order_by(StudyRead.id)))


def mark_read(db: Session, user: User, study_uid: str) -> StudyRead | None:
    """Done: this reader has read the study. Adds a row only when they have none yet (an impression already
    reads it); returns the row added, or None."""
    query = select(StudyRead.id).where(StudyRead.study_uid == study_uid, StudyRead.user_id == user.id)
    if db.scalar(query.limit(1)) is not None:
        return None
    read = StudyRead(study_uid=study_uid, user_id=user.id, impression=NO_IMPRESSION, ai_visible=True)
    db.add(read)
    db.flush()
    return read


def studies_read(db: Session, study_uids: list[str]) -> set[str]:
    """Which of these studies any reader has recorded an impression of."""
    if not study_uids:
        return set()
    query = select(StudyRead.study_uid).where(StudyRead.study_uid.in_(study_uids)).distinct()
    return set(db.scalars(query))


def ai_hidden(db: Session, user: User, study_uid: str) -> bool:
    """Blinded read: hidden until this reader has recorded an impression of this study."""
    return user.blinded_read and not impressions_of(db, user, study_uid)
