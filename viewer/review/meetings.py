"""Running a discrepancy review meeting: start it with its cases in order, record the consensus on each
case, end it. An ended meeting is the record the minutes are made from: its decisions no longer change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from openaim.db import utcnow
from viewer.access.users import User
from viewer.review.queue import QueueCase
from viewer.review.records import Outcome, ReviewAttendee, ReviewCase, ReviewDecision, ReviewMeeting
from viewer.row_ids import RowId

MeetingId = RowId


class MeetingClosedError(Exception):
    """The meeting has ended: its minutes are final."""


@dataclass(frozen=True)
class DecisionInput:
    outcome: Outcome
    learning_point: str = ""
    follow_up: str = ""


def start_meeting(
    db: Session,
    chair: User,
    title: str,
    cases: Sequence[QueueCase],
    attendees: Sequence[User] = (),
    guests: Sequence[str] = (),
) -> ReviewMeeting:
    """A new meeting over ``cases`` in the given order (case 1 first); attendees are users or names.

    The chair is at the meeting: the attendees start with the chair (once, whether or not the form also
    ticked them), then the other users, then the names typed in."""
    if not cases:
        raise ValueError("a meeting needs at least one case")
    meeting = ReviewMeeting(title=title, chair=chair, chair_id=chair.id)
    people = [chair, *(user for user in attendees if user.id != chair.id)]
    meeting.attendees = [ReviewAttendee(user_id=user.id, name=user.display_name) for user in people]
    meeting.attendees += [ReviewAttendee(name=name) for name in dict.fromkeys(guests) if name]
    meeting.cases = [
        ReviewCase(
            position=number,
            study_uid=case.study_uid,
            models=case.models,
            findings=case.findings,
            discrepancy=case.reasons,
        )
        for number, case in enumerate(cases, start=1)
    ]
    db.add(meeting)
    db.flush()
    return meeting


def meeting_or_404(db: Session, meeting_id: int) -> ReviewMeeting:
    """For the routes: the meeting, or the 404 that says it does not exist."""
    meeting = db.get(ReviewMeeting, meeting_id)
    if meeting is None:
        raise HTTPException(404, "No such review meeting.")
    return meeting


def case_at(meeting: ReviewMeeting, number: int) -> ReviewCase | None:
    return next((case for case in meeting.cases if case.position == number), None)


def record_decision(
    db: Session, meeting: ReviewMeeting, case: ReviewCase, user: User, given: DecisionInput
) -> tuple[ReviewDecision, bool]:
    """The meeting's consensus on ``case``; a second save replaces the first. Returns (decision, created)."""
    if meeting.ended:
        raise MeetingClosedError("the meeting has ended")
    decision = db.scalar(select(ReviewDecision).where(ReviewDecision.case_id == case.id))
    created = decision is None
    if decision is None:
        decision = ReviewDecision(case_id=case.id)
        db.add(decision)
    decision.outcome = given.outcome.value
    decision.learning_point = given.learning_point.strip()
    decision.follow_up = given.follow_up.strip()
    decision.decided_by = user
    decision.decided_by_id = user.id
    decision.decided_at = utcnow()
    db.flush()
    case.decision = decision
    return decision, created


def end_meeting(meeting: ReviewMeeting) -> None:
    if meeting.ended:
        raise MeetingClosedError("the meeting has already ended")
    meeting.ended_at = utcnow()
