"""The discrepancy review queue: every study where a reader's current feedback disagrees with the AI (a
verdict of disagree, a finding the AI missed, a wrong triage flag) or where a reader asked for review.

Only the newest version of each reader's feedback counts: a reader who changed "disagree" to "agree" has
taken the case out of the queue. Built from the database alone, so it costs no archive request.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from viewer.access.users import User
from viewer.feedback.records import (
    Feedback,
    Kind,
    Verdict,
    reasons_of,
)
from viewer.review.records import ReviewCase, ReviewDecision


@dataclass(frozen=True)
class QueueFilters:
    model: str = ""  # model id, as the feedback recorded it
    date_from: date | None = None  # of the feedback (UTC), inclusive
    date_to: date | None = None
    finding: str = ""
    reason: str = ""  # one of REASONS
    state: str = ""  # "open" (no decision yet) or "decided"

    def in_audit(self) -> dict[str, str]:
        asked = {"model": self.model, "from": str(self.date_from or ""), "to": str(self.date_to or "")}
        asked |= {"finding": self.finding, "reason": self.reason, "state": self.state}
        return {key: value for key, value in asked.items() if value}


@dataclass(frozen=True)
class Discrepancy:
    """One reader's current feedback row that puts the study in the queue."""

    feedback_id: int
    reader: str
    kind: str
    model: str  # "model-id version", or "" for feedback on the study as a whole
    finding: str
    reasons: tuple[str, ...]
    comment: str
    created_at: datetime


@dataclass(frozen=True)
class QueueCase:
    study_uid: str
    discrepancies: tuple[Discrepancy, ...]
    decision: ReviewDecision | None = None  # the newest decision on the study, in any meeting
    meeting_id: int | None = None  # the meeting that made it

    @property
    def models(self) -> str:
        return _joined(item.model for item in self.discrepancies)

    @property
    def findings(self) -> str:
        return _joined(item.finding for item in self.discrepancies)

    @property
    def reasons(self) -> str:
        return _joined(reason.replace("_", " ") for item in self.discrepancies for reason in item.reasons)


def _joined(values: Iterable[str]) -> str:
    """Distinct values in the order first seen."""
    return "; ".join(dict.fromkeys(value for value in values if value))


def _current_discrepancies(filters: QueueFilters) -> Select[Feedback, str]:
    newest = (
        select(
            Feedback.user_id,
            Feedback.study_uid,
            Feedback.target,
            func.max(Feedback.version).label("version"),
        )
        .group_by(Feedback.user_id, Feedback.study_uid, Feedback.target)
        .subquery()
    )
    query = (
        select(Feedback, User.display_name)
        .join(
            newest,
            and_(
                Feedback.user_id == newest.c.user_id,
                Feedback.study_uid == newest.c.study_uid,
                Feedback.target == newest.c.target,
                Feedback.version == newest.c.version,
            ),
        )
        .join(User, User.id == Feedback.user_id)
        .where(
            or_(
                Feedback.verdict == Verdict.DISAGREE.value,
                Feedback.kind == Kind.MISSED.value,
                Feedback.triage_correct.is_(False),
                Feedback.review_requested.is_(True),
            )
        )
    )
    if filters.model:
        query = query.where(Feedback.model_id == filters.model)
    if filters.finding:
        query = query.where(Feedback.finding_label == filters.finding)
    if filters.date_from:
        query = query.where(Feedback.created_at >= datetime.combine(filters.date_from, time(), UTC))
    if filters.date_to:
        end = datetime.combine(filters.date_to + timedelta(days=1), time(), UTC)
        query = query.where(Feedback.created_at < end)
    return query.order_by(Feedback.created_at, Feedback.id)


def _discrepancy(row: Feedback, reader: str) -> Discrepancy:
    model = " ".join(part for part in (row.model_id, row.model_version) if part)
    return Discrepancy(
        feedback_id=row.id,
        reader=reader,
        kind=row.kind,
        model=model,
        finding=row.finding_label or "",
        reasons=reasons_of(row),
        comment=row.comment or "",
        created_at=row.created_at,
    )


def latest_decisions(db: Session, study_uids: list[str]) -> dict[str, tuple[ReviewDecision, int]]:
    """Study UID -> (its newest decision, the meeting that made it)."""
    if not study_uids:
        return {}
    query = (
        select(ReviewCase.study_uid, ReviewCase.meeting_id, ReviewDecision)
        .join(ReviewDecision, ReviewDecision.case_id == ReviewCase.id)
        .where(ReviewCase.study_uid.in_(study_uids))
        .order_by(ReviewDecision.decided_at, ReviewDecision.id)
    )
    return {study_uid: (decision, meeting_id) for study_uid, meeting_id, decision in db.execute(query)}


def review_queue(db: Session, filters: QueueFilters) -> list[QueueCase]:
    """The cases to review, the study with the oldest discrepancy first."""
    by_study: dict[str, list[Discrepancy]] = defaultdict(list)
    for row, reader in db.execute(_current_discrepancies(filters)):
        item = _discrepancy(row, reader)
        if not filters.reason or filters.reason in item.reasons:
            by_study[row.study_uid].append(item)
    decisions = latest_decisions(db, list(by_study))
    cases = []
    for study_uid, items in by_study.items():
        decision, meeting_id = decisions.get(study_uid, (None, None))
        if (filters.state == "open" and decision) or (filters.state == "decided" and not decision):
            continue
        cases.append(QueueCase(study_uid, tuple(items), decision, meeting_id))
    return cases


def filter_choices(db: Session) -> tuple[list[str], list[str]]:
    """The models and the findings that appear in any feedback, for the filter menus."""
    models = db.scalars(select(Feedback.model_id).where(Feedback.model_id.is_not(None)).distinct())
    labels = select(Feedback.finding_label).where(Feedback.finding_label.is_not(None)).distinct()
    return sorted(map(str, models)), sorted(map(str, db.scalars(labels)))
