"""The review queue's and "My feedback"'s database work as it was before issue 14 (commit 3ab13df), kept
so that bench/bench_feedback_queries.py times the old and the new queries on the same rows in one run.

The queue found each reader's newest version of every target by grouping the whole feedback table, read
every current discrepancy into Python and grouped it by study; the filter menus read DISTINCT over the
whole table; "My feedback" sorted every row by time to keep the newest 500.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from viewer.access.users import User
from viewer.feedback.records import Feedback, Kind, Verdict, reasons_of
from viewer.review.queue import QueueFilters
from viewer.review.records import ReviewCase, ReviewDecision

MY_FEEDBACK_ROWS = 500


def review_queue_page(db: Session, filters: QueueFilters) -> list[str]:
    """The queue page's queries as they were; returns the studies the page listed (all of them), in order."""
    db.scalars(select(Feedback.model_id).where(Feedback.model_id.is_not(None)).distinct()).all()
    db.scalars(select(Feedback.finding_label).where(Feedback.finding_label.is_not(None)).distinct()).all()
    newest = (
        select(
            Feedback.user_id, Feedback.study_uid, Feedback.target, func.max(Feedback.version).label("version")
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
        query = query.where(
            Feedback.created_at < datetime.combine(filters.date_to + timedelta(days=1), time(), UTC)
        )
    by_study: dict[str, list[Feedback]] = defaultdict(list)
    for row, _reader in db.execute(query.order_by(Feedback.created_at, Feedback.id)):
        if not filters.reason or filters.reason in reasons_of(row):
            by_study[row.study_uid].append(row)
    decisions = latest_decisions(db, list(by_study))
    cases = []
    for study in by_study:
        decided = study in decisions
        if (filters.state == "open" and decided) or (filters.state == "decided" and not decided):
            continue
        cases.append(study)
    return cases


def latest_decisions(db: Session, study_uids: list[str]) -> dict[str, tuple[ReviewDecision, int]]:
    """As it was: one IN list of every study in the queue (PostgreSQL refuses more than 65,535)."""
    if not study_uids:
        return {}
    query = (
        select(ReviewCase.study_uid, ReviewCase.meeting_id, ReviewDecision)
        .join(ReviewDecision, ReviewDecision.case_id == ReviewCase.id)
        .where(ReviewCase.study_uid.in_(study_uids))
        .order_by(ReviewDecision.decided_at, ReviewDecision.id)
    )
    return {study_uid: (decision, meeting_id) for study_uid, meeting_id, decision in db.execute(query)}


def my_feedback_page(db: Session, user_id: int | None) -> list[int]:
    """My feedback as it was: the ids of the newest 500 rows of one reader, or of everyone (``None``)."""
    query = select(Feedback, User.display_name).join(User, User.id == Feedback.user_id)
    if user_id is not None:
        query = query.where(Feedback.user_id == user_id)
    rows = db.execute(query.order_by(Feedback.created_at.desc(), Feedback.id.desc()).limit(MY_FEEDBACK_ROWS))
    return [row.id for row, _name in rows]
