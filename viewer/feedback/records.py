"""Second-reader feedback: what a reader says about each AI finding, about findings the AI missed, and about
the study as a whole (whether the triage flag was right; the overall impression is in
viewer/reading/reads.py).

Nothing is ever overwritten. An edit is a new row with the next version number that points at the row it
replaces, so the history is the table itself. Two readers of one study keep their own rows. Every save
carries a client-made id: a retry of a save whose answer was lost finds its row instead of adding another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from openaim.db import Base, UTCDateTime, utcnow
from viewer.access.users import User


class Verdict(StrEnum):
    AGREE = "agree"
    DISAGREE = "disagree"
    UNSURE = "unsure"


class Reason(StrEnum):
    """Why a reader disagrees. False negatives are their own records (a box the reader drew)."""

    FALSE_POSITIVE_ARTEFACT = "false_positive_artefact"
    FALSE_POSITIVE_NORMAL_VARIANT = "false_positive_normal_variant"
    FALSE_POSITIVE_OTHER_FINDING = "false_positive_other_finding"
    WRONG_LOCATION = "wrong_location"
    FALSE_NEGATIVE = "false_negative"


class Kind(StrEnum):
    FINDING = "finding"  # a verdict on one AI finding
    MISSED = "missed"  # a finding the AI missed, marked with a box (a false negative)
    STUDY = "study"  # the study as a whole: was the triage flag right (the impression: reading/reads.py)


# Discrepancies that are not a Reason code of their own.
DISAGREE = "disagree"  # a disagree verdict without a reason
TRIAGE_WRONG = "triage_wrong"
REVIEW_REQUESTED = "review_requested"
REASONS = (*(reason.value for reason in Reason), DISAGREE, TRIAGE_WRONG, REVIEW_REQUESTED)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (
        # Also how a row's newer version is found (the review queue's "current" check).
        UniqueConstraint("user_id", "study_uid", "target", "version", name="uq_feedback_version"),
        # The orders the review queue and "My feedback" read in, so that a page stops early at any volume
        # (migration 0007): everyone's rows by time, one reader's, one model's, one finding's.
        Index("ix_feedback_created_at_id", "created_at", "id"),
        Index("ix_feedback_user_id_created_at", "user_id", "created_at", "id"),
        Index("ix_feedback_model_id_created_at", "model_id", "created_at", "id"),
        Index("ix_feedback_finding_label_created_at", "finding_label", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(36), unique=True)  # made by the browser: retries are safe
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # What the row is about, stable across versions: "study", "finding:<finding id>", "missed:<uuid>"
    target: Mapped[str] = mapped_column(String(120))
    version: Mapped[int] = mapped_column(Integer)
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("feedback.id"))
    result_id: Mapped[str | None] = mapped_column(String(80))  # ResultView.id of the AI result
    finding_id: Mapped[str | None] = mapped_column(String(80))  # FindingView.id
    finding_label: Mapped[str | None] = mapped_column(String(200))
    verdict: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(48))
    comment: Mapped[str | None] = mapped_column(Text)
    # A missed finding's (or a wrong location's) box: {"instance_uid", "frame", "box": [x0, y0, x1, y1]}
    mark_json: Mapped[str | None] = mapped_column(Text)
    triage_correct: Mapped[bool | None] = mapped_column(Boolean)
    review_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The algorithm the feedback is about (IHE AIR), kept on the row: results and catalogs change.
    model_id: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(64))
    device_uid: Mapped[str | None] = mapped_column(String(64))
    seconds_on_study: Mapped[float | None] = mapped_column(Float)
    ai_visible: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def mark(self) -> dict[str, Any] | None:
        return json.loads(self.mark_json) if self.mark_json else None


@dataclass(frozen=True)
class FeedbackInput:
    """One save from the browser. ``target`` names what it is about; the rest is the new state."""

    client_id: str
    study_uid: str
    kind: Kind
    target: str
    result_id: str | None = None
    finding_id: str | None = None
    finding_label: str | None = None
    verdict: Verdict | None = None
    reason: Reason | None = None
    comment: str | None = None
    mark: dict[str, Any] | None = None
    triage_correct: bool | None = None
    review_requested: bool = False
    model_id: str | None = None
    model_version: str | None = None
    device_uid: str | None = None
    seconds_on_study: float | None = None
    ai_visible: bool = True


class FeedbackConflictError(Exception):
    """Another save of the same target by the same reader won the race; the client retries it."""


def save(db: Session, user: User, given: FeedbackInput) -> tuple[Feedback, bool]:
    """Store ``given`` as the next version of its target. Returns (row, created): a retry of a save
    already stored (same ``client_id``) returns that row and False."""
    existing = db.scalar(select(Feedback).where(Feedback.client_id == given.client_id))
    if existing is not None:
        if existing.user_id != user.id:
            raise FeedbackConflictError("this client id belongs to another reader's save")
        return existing, False
    previous = latest(db, user, given.study_uid, given.target)
    row = Feedback(
        client_id=given.client_id,
        user_id=user.id,
        study_uid=given.study_uid,
        kind=given.kind.value,
        target=given.target,
        version=(previous.version + 1) if previous else 1,
        previous_id=previous.id if previous else None,
        result_id=given.result_id,
        finding_id=given.finding_id,
        finding_label=given.finding_label,
        verdict=given.verdict.value if given.verdict else None,
        reason=given.reason.value if given.reason else None,
        comment=given.comment or None,
        mark_json=json.dumps(given.mark) if given.mark else None,
        triage_correct=given.triage_correct,
        review_requested=given.review_requested,
        model_id=given.model_id,
        model_version=given.model_version,
        device_uid=given.device_uid,
        seconds_on_study=given.seconds_on_study,
        ai_visible=given.ai_visible,
    )
    try:
        with db.begin_nested():
            db.add(row)
    except IntegrityError as error:
        raise FeedbackConflictError("a concurrent save took this version; retry") from error
    return row, True


def latest(db: Session, user: User, study_uid: str, target: str) -> Feedback | None:
    query = select(Feedback).where(
        Feedback.user_id == user.id, Feedback.study_uid == study_uid, Feedback.target == target
    )
    return db.scalar(query.order_by(Feedback.version.desc()).limit(1))


def current(db: Session, study_uid: str, user: User | None = None) -> list[Feedback]:
    """The newest version of every target of the study (one reader's, or everyone's)."""
    newest = (
        select(Feedback.user_id, Feedback.target, func.max(Feedback.version).label("version"))
        .where(Feedback.study_uid == study_uid)
        .group_by(Feedback.user_id, Feedback.target)
    )
    if user is not None:
        newest = newest.where(Feedback.user_id == user.id)
    latest_rows = newest.subquery()
    query = select(Feedback).join(
        latest_rows,
        (Feedback.user_id == latest_rows.c.user_id)
        & (Feedback.target == latest_rows.c.target)
        & (Feedback.version == latest_rows.c.version),
    )
    return list(db.scalars(query.where(Feedback.study_uid == study_uid).order_by(Feedback.id)))


def reasons_of(row: Feedback) -> tuple[str, ...]:
    """Why the row is a discrepancy (empty when it is not one)."""
    found = []
    if row.reason:
        found.append(row.reason)
    elif row.verdict == Verdict.DISAGREE.value:
        found.append(DISAGREE)
    if row.triage_correct is False:
        found.append(TRIAGE_WRONG)
    if row.review_requested:
        found.append(REVIEW_REQUESTED)
    return tuple(found)
