"""Discrepancy review meetings: who met, which cases they went through in which order, and what they
decided about each.

A case keeps a snapshot of its discrepancies as they were when the meeting started (models, findings,
reasons), so the minutes still say what was discussed after a reader edits their feedback. A decision is
one row per case, changed in place while the meeting runs; every save is in the audit trail, which keeps
the history.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from openaim.db import Base, UTCDateTime, utcnow
from viewer.access.users import User


class Outcome(StrEnum):
    """The consensus of the meeting on one case."""

    AI_RIGHT = "ai_right"
    READER_RIGHT = "reader_right"
    BOTH_WRONG = "both_wrong"
    UNDECIDED = "undecided"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize().replace("Ai ", "AI ")


class ReviewMeeting(Base):
    __tablename__ = "review_meetings"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    chair_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    chair: Mapped[User] = relationship(lazy="joined")
    attendees: Mapped[list[ReviewAttendee]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="ReviewAttendee.id"
    )
    cases: Mapped[list[ReviewCase]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="ReviewCase.position"
    )

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


class ReviewAttendee(Base):
    """Someone at the meeting: a platform user, or a name typed in (a visiting clinician)."""

    __tablename__ = "review_attendees"

    id: Mapped[int] = mapped_column(primary_key=True)
    meeting_id: Mapped[int] = mapped_column(ForeignKey("review_meetings.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(128))


class ReviewCase(Base):
    """One study in a meeting, at its place in the running order (``position`` is the case number)."""

    __tablename__ = "review_cases"
    __table_args__ = (
        UniqueConstraint("meeting_id", "position", name="uq_review_cases_position"),
        UniqueConstraint("meeting_id", "study_uid", name="uq_review_cases_study"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    meeting_id: Mapped[int] = mapped_column(ForeignKey("review_meetings.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    models: Mapped[str] = mapped_column(Text, default="")  # "model version; ..." when the meeting started
    findings: Mapped[str] = mapped_column(Text, default="")
    discrepancy: Mapped[str] = mapped_column(Text, default="")
    decision: Mapped[ReviewDecision | None] = relationship(
        cascade="all, delete-orphan", lazy="selectin", uselist=False
    )


class ReviewDecision(Base):
    __tablename__ = "review_decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("review_cases.id", ondelete="CASCADE"), unique=True)
    outcome: Mapped[str] = mapped_column(String(16))
    learning_point: Mapped[str] = mapped_column(Text, default="")
    follow_up: Mapped[str] = mapped_column(Text, default="")
    decided_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    decided_by: Mapped[User] = relationship(lazy="joined")

    @property
    def outcome_label(self) -> str:
        return Outcome(self.outcome).label
