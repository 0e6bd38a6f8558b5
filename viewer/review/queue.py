"""The discrepancy review queue: every study where a reader's current feedback disagrees with the AI (a
verdict of disagree, a finding the AI missed, a wrong triage flag) or where a reader asked for review.

Only the newest version of each reader's feedback counts: a reader who changed "disagree" to "agree" has
taken the case out of the queue. Built from the database alone, so it costs no archive request.

Only studies in the archive are listed, as the platform's study index knows them: feedback saved for a
UID the archive never held (the feedback API accepted any until issue 15) stays in the database, and
leaves the queue, like the feedback of a study since deleted from the archive. A study that has just
arrived joins the queue once the index has it (seconds).

The queue is read a page at a time, so that it holds at a million feedback rows (issue 14): the rows are
walked in the order of their save time, along an index (migration 0006_feedback_query_indexes), until the
page has its studies, each row checked for a newer version through the unique (reader, study, target,
version) index. A study takes its place from its oldest discrepancy; the next page starts after the
oldest discrepancy of the last study shown and leaves out the studies already shown. Nothing counts the
whole queue: the page says whether there is a next one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased
from sqlalchemy.sql import Select

from inference.study_index import IndexedStudy
from viewer.access.users import User
from viewer.feedback.records import (
    DISAGREE,
    REVIEW_REQUESTED,
    TRIAGE_WRONG,
    Feedback,
    Kind,
    Verdict,
    reasons_of,
)
from viewer.review.records import ReviewCase, ReviewDecision

PAGE_SIZE = 50  # studies per page
SCAN_BATCH = 200  # discrepancy rows read at a time while looking for a page's studies
MAX_SCAN_BATCH = 5000


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


NO_FILTERS = QueueFilters()


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


def _discrepancy_clause(row: type[Feedback]) -> ColumnElement[bool]:
    return or_(
        row.verdict == Verdict.DISAGREE.value,
        row.kind == Kind.MISSED.value,
        row.triage_correct.is_(False),
        row.review_requested.is_(True),
    )


def _reason_clause(row: type[Feedback], reason: str) -> ColumnElement[bool]:
    """The rows whose reasons_of() holds ``reason``, said in SQL so that the database filters them."""
    if reason == DISAGREE:
        return and_(row.reason.is_(None), row.verdict == Verdict.DISAGREE.value)
    if reason == TRIAGE_WRONG:
        return row.triage_correct.is_(False)
    if reason == REVIEW_REQUESTED:
        return row.review_requested.is_(True)
    return row.reason == reason


def _newest_version(row: type[Feedback]) -> ColumnElement[bool]:
    """No newer version of the row's target by its reader: one probe of uq_feedback_version."""
    newer = aliased(Feedback)
    return ~exists().where(
        newer.user_id == row.user_id,
        newer.study_uid == row.study_uid,
        newer.target == row.target,
        newer.version > row.version,
    )


def _in_archive(row: type[Feedback]) -> ColumnElement[bool]:
    """The row's study is in the study index: one probe of its study UID index."""
    return exists().where(IndexedStudy.study_uid == row.study_uid)


def _row_clauses(
    row: type[Feedback], filters: QueueFilters, by_study: bool = False
) -> list[ColumnElement[bool]]:
    """What makes one feedback row a discrepancy the queue shows under ``filters``.

    ``by_study``: the rows are looked up by study, and the model and finding tests must not tempt the
    planner onto their own indexes: SQLite (no statistics) took the model index for "these 50 studies of
    that model" and read every row of the model. COALESCE keeps the meaning and hides the column."""
    clauses = [_discrepancy_clause(row), _newest_version(row), _in_archive(row)]
    if filters.model:
        model = func.coalesce(row.model_id, "") if by_study else row.model_id
        clauses.append(model == filters.model)
    if filters.finding:
        finding = func.coalesce(row.finding_label, "") if by_study else row.finding_label
        clauses.append(finding == filters.finding)
    if filters.date_from:
        clauses.append(row.created_at >= datetime.combine(filters.date_from, time(), UTC))
    if filters.date_to:
        clauses.append(row.created_at < datetime.combine(filters.date_to + timedelta(days=1), time(), UTC))
    if filters.reason:
        clauses.append(_reason_clause(row, filters.reason))
    return clauses


def _study_clauses(filters: QueueFilters) -> list[ColumnElement[bool]]:
    decided = select(ReviewCase.study_uid).join(ReviewDecision, ReviewDecision.case_id == ReviewCase.id)
    if filters.state == "open":
        return [~exists(decided.where(ReviewCase.study_uid == Feedback.study_uid))]
    if filters.state == "decided":
        # Few studies are decided (a meeting's worth a month): start from them rather than walk every
        # discrepancy in time order looking for theirs.
        return [Feedback.study_uid.in_(decided)]
    return []


def _order_key(row: type[Feedback]) -> ColumnElement[Any]:
    return tuple_(row.created_at, row.id)


def _shown_before(filters: QueueFilters, after: tuple[datetime, int]) -> ColumnElement[bool]:
    """The row's study has a discrepancy at or before ``after``: an earlier page showed it."""
    earlier = aliased(Feedback)
    return exists().where(
        earlier.study_uid == Feedback.study_uid,
        _order_key(earlier) <= tuple_(*after),
        *_row_clauses(earlier, filters),
    )


def _page_studies(
    db: Session, filters: QueueFilters, after: tuple[datetime, int] | None, size: int
) -> list[tuple[str, int]]:
    """Up to ``size + 1`` studies, each with the id of its oldest discrepancy, oldest first.

    Walks the discrepancies in batches along the save-time order until enough studies are seen; each
    batch is a LIMIT query, so that both databases read the index in order and stop early."""
    base = select(Feedback.id, Feedback.study_uid, Feedback.created_at).where(
        *_row_clauses(Feedback, filters), *_study_clauses(filters)
    )
    if after is not None:
        base = base.where(_order_key(Feedback) > tuple_(*after), ~_shown_before(filters, after))
    base = base.order_by(Feedback.created_at, Feedback.id)
    studies: dict[str, int] = {}
    position = after
    batch = SCAN_BATCH
    while len(studies) <= size:
        query = base if position is None else base.where(_order_key(Feedback) > tuple_(*position))
        rows = db.execute(query.limit(batch)).all()
        for row_id, study_uid, _ in rows:
            studies.setdefault(study_uid, row_id)
        if len(rows) < batch:
            break
        position = (rows[-1].created_at, rows[-1].id)
        batch = min(batch * 4, MAX_SCAN_BATCH)  # rarer matches: fewer round trips
    return list(studies.items())[: size + 1]


def _case_rows(filters: QueueFilters, study_uids: list[str]) -> Select[Feedback, str]:
    return (
        select(Feedback, User.display_name)
        .join(User, User.id == Feedback.user_id)
        .where(Feedback.study_uid.in_(study_uids), *_row_clauses(Feedback, filters, by_study=True))
        .order_by(Feedback.created_at, Feedback.id)
    )


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
    found: dict[str, tuple[ReviewDecision, int]] = {}
    for chunk in _chunks(study_uids):
        query = (
            select(ReviewCase.study_uid, ReviewCase.meeting_id, ReviewDecision)
            .join(ReviewDecision, ReviewDecision.case_id == ReviewCase.id)
            .where(ReviewCase.study_uid.in_(chunk))
            .order_by(ReviewDecision.decided_at, ReviewDecision.id)
        )
        found |= {study_uid: (decision, meeting_id) for study_uid, meeting_id, decision in db.execute(query)}
    return found


@dataclass(frozen=True)
class QueuePage:
    cases: list[QueueCase]
    next_after: int | None  # the ``after`` of the next page; None on the last page


def review_queue(
    db: Session, filters: QueueFilters, after: int | None = None, size: int = PAGE_SIZE
) -> QueuePage:
    """One page of cases to review, the study with the oldest discrepancy first. ``after`` is the id of
    the oldest discrepancy of the last study on the page before (the ``next_after`` it returned)."""
    position = _position(db, after)
    found = _page_studies(db, filters, position, size)
    shown = found[:size]
    cases = queue_cases(db, [study_uid for study_uid, _ in shown], filters)
    return QueuePage(cases, shown[-1][1] if len(found) > size else None)


def _position(db: Session, after: int | None) -> tuple[datetime, int] | None:
    if after is None:
        return None
    created_at = db.scalar(select(Feedback.created_at).where(Feedback.id == after))
    return None if created_at is None else (created_at, after)


def queue_cases(db: Session, study_uids: list[str], filters: QueueFilters = NO_FILTERS) -> list[QueueCase]:
    """The queue's cases for these studies, in the given order; a study not in the queue is left out."""
    if not study_uids:
        return []
    by_study: dict[str, list[Discrepancy]] = {study_uid: [] for study_uid in study_uids}
    for chunk in _chunks(study_uids):
        for row, reader in db.execute(_case_rows(filters, chunk)):
            by_study[row.study_uid].append(_discrepancy(row, reader))
    decisions = latest_decisions(db, study_uids)
    cases = []
    for study_uid, items in by_study.items():
        decision, meeting_id = decisions.get(study_uid, (None, None))
        if (
            not items
            or (filters.state == "open" and decision)
            or (filters.state == "decided" and not decision)
        ):
            continue
        cases.append(QueueCase(study_uid, tuple(items), decision, meeting_id))
    return cases


def _chunks(values: list[str], size: int = 500) -> Iterable[list[str]]:
    """IN lists of bounded length (SQLite allows 32766 parameters; smaller lists plan better)."""
    return (values[start : start + size] for start in range(0, len(values), size))


def filter_choices(db: Session) -> tuple[list[str], list[str]]:
    """The models and the findings that appear in any feedback, for the filter menus.

    DISTINCT would read every row; this skips along the model and finding indexes instead, one index
    probe per distinct value (a loose index scan, written as a recursive query for both databases)."""
    return _distinct(db, Feedback.model_id), _distinct(db, Feedback.finding_label)


def _distinct(db: Session, column: InstrumentedAttribute[str | None]) -> list[str]:
    seen = select(func.min(column).label("value")).cte("seen", recursive=True)
    following = select(func.min(column)).where(column > seen.c.value).scalar_subquery()
    seen = seen.union_all(select(following).where(seen.c.value.is_not(None)))
    return sorted(str(value) for value in db.scalars(select(seen.c.value).where(seen.c.value.is_not(None))))
