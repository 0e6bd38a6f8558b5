"""Discrepancy review for reviewers (QA leads) and admins: the queue of cases where readers and the AI
disagreed, and the meetings that go through them one by one, anonymised, recording a consensus per case.

Every step is audited: the queue as a query, a meeting's start and end as application activity, each case
shown as instances accessed, each decision as an AI review decision.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BeforeValidator
from sqlalchemy import select
from sqlalchemy.orm import Session

from openaim import audit
from openaim.uids import UID_PATTERN
from viewer.access.deps import ArchiveClient, Audit, DbSession, Reviewer
from viewer.access.users import User
from viewer.ai_results.platform_results import platform_results
from viewer.feedback.records import REASONS
from viewer.reading.pictures import picture_png
from viewer.reading.study_labels import study_labels
from viewer.review import minutes
from viewer.review.anonymise import identifiers_of, scrub
from viewer.review.meeting_case import case_images, reader_columns
from viewer.review.meetings import (
    DecisionInput,
    MeetingClosedError,
    MeetingId,
    case_at,
    end_meeting,
    meeting_or_404,
    record_decision,
    start_meeting,
)
from viewer.review.queue import PAGE_SIZE, QueueFilters, filter_choices, queue_cases, review_queue
from viewer.review.records import Outcome, ReviewCase, ReviewMeeting
from viewer.row_ids import OptionalRowIdQuery
from viewer.templates import render

router = APIRouter()
router.include_router(minutes.router)

BlankIsNone = BeforeValidator(lambda value: value or None)
FilterText = Annotated[str, Query(max_length=200, pattern=r"^[^\x00-\x1f]*$")]
CaseNumber = Annotated[int, Path(ge=1, le=100_000)]
LongText = Annotated[str, Form(max_length=4000)]
IMAGE_CACHE = {"cache-control": "private, max-age=3600"}


@router.get("/review")
def queue_page(
    request: Request,
    _: Reviewer,
    db: DbSession,
    trail: Audit,
    model: FilterText = "",
    date_from: Annotated[date | None, BlankIsNone] = None,
    date_to: Annotated[date | None, BlankIsNone] = None,
    finding: FilterText = "",
    reason: Annotated[str, Query(pattern=f"^({'|'.join(REASONS)})?$")] = "",
    state: Annotated[str, Query(pattern=r"^(open|decided)?$")] = "",
    after: OptionalRowIdQuery = None,
) -> Response:
    filters = QueueFilters(model, date_from, date_to, finding, reason, state)
    trail.record(
        audit.EventType.QUERY,
        action=audit.Action.EXECUTE,
        detail={"scope": "review queue", "filters": filters.in_audit()},
    )
    models, findings = filter_choices(db)
    page = review_queue(db, filters, after)
    return render(
        request,
        "review/queue.html",
        cases=page.cases,
        labels=study_labels(db, (case.study_uid for case in page.cases)),
        next_page=_page_url(request, page.next_after) if page.next_after else None,
        first_page=_page_url(request, None) if after else None,
        page_size=PAGE_SIZE,
        filters=filters,
        reasons=REASONS,
        users=_colleagues(db),
        models=models,
        findings=findings,
    )


def _page_url(request: Request, after: int | None) -> str:
    """This queue, same filters, from ``after`` (None: from the start)."""
    params = [(key, value) for key, value in request.query_params.multi_items() if key != "after"]
    params += [("after", str(after))] if after else []
    return f"{request.url.path}?{urlencode(params)}"


def _colleagues(db: Session) -> list[User]:
    return list(db.scalars(select(User).where(User.active.is_(True)).order_by(User.display_name)))


@router.post("/review/meetings")
def new_meeting(
    chair: Reviewer,
    db: DbSession,
    trail: Audit,
    title: Annotated[str, Form(min_length=1, max_length=200)],
    case: Annotated[list[str], Form()],
    attendee: Annotated[list[int], Form()] = [],  # noqa: B006  (FastAPI copies form defaults)
    guests: LongText = "",
) -> Response:
    """Start a meeting over the chosen queue cases, in the order the form lists them (the queue's)."""
    if not title.strip():
        raise HTTPException(422, "A meeting needs a title.")
    if any(not re.fullmatch(UID_PATTERN, uid) for uid in case):
        raise HTTPException(422, "A case is not a study UID.")
    queued = {item.study_uid: item for item in queue_cases(db, list(dict.fromkeys(case)))}
    missing = [uid for uid in case if uid not in queued]
    if missing:
        raise HTTPException(422, "A chosen case is not in the review queue (any more).")
    cases = [queued[uid] for uid in dict.fromkeys(case)]
    users = list(db.scalars(select(User).where(User.id.in_(attendee)).order_by(User.display_name)))
    names = [line.strip()[:128] for line in guests.splitlines() if line.strip()]
    meeting = start_meeting(db, chair, title.strip(), cases, users, names)
    trail.record(
        audit.EventType.APPLICATION_ACTIVITY,
        action=audit.Action.CREATE,
        detail={"review_meeting": meeting.id, "event": "start", "cases": len(cases)}
        | {"attendees": [attendee.name for attendee in meeting.attendees]},
    )
    return RedirectResponse(f"/review/meetings/{meeting.id}/cases/1", status_code=303)


def _case_or_404(meeting: ReviewMeeting, number: int) -> ReviewCase:
    case = case_at(meeting, number)
    if case is None:
        raise HTTPException(404, "No such case in this meeting.")
    return case


@router.get("/review/meetings")
def meetings_page(request: Request, _: Reviewer, db: DbSession) -> Response:
    meetings = db.scalars(select(ReviewMeeting).order_by(ReviewMeeting.started_at.desc()).limit(200))
    return render(request, "review/meetings.html", meetings=list(meetings))


@router.get("/review/meetings/{meeting_id}")
def meeting_page(request: Request, meeting_id: MeetingId, _: Reviewer, db: DbSession) -> Response:
    return render(request, "review/meeting.html", meeting=meeting_or_404(db, meeting_id))


@router.get("/review/meetings/{meeting_id}/cases/{number}")
async def case_page(
    request: Request,
    meeting_id: MeetingId,
    number: CaseNumber,
    _: Reviewer,
    db: DbSession,
    archive: ArchiveClient,
    trail: Audit,
) -> Response:
    meeting = meeting_or_404(db, meeting_id)
    case = _case_or_404(meeting, number)
    results = platform_results(db, case.study_uid)
    study = await archive.find_study(case.study_uid)
    images = await case_images(archive, case.study_uid, results) if study is not None else []
    trail.record(
        audit.EventType.INSTANCES_ACCESSED,
        action=audit.Action.READ,
        object_uid=case.study_uid,
        detail={"review_meeting": meeting.id, "case": number, "anonymised": True, "images": len(images)},
    )
    return render(
        request,
        "review/meeting_case.html",
        meeting=meeting,
        case=case,
        total=len(meeting.cases),
        images=images,
        results=results,
        disputed={item.strip() for item in case.findings.split(";")},
        readers=reader_columns(db, case.study_uid, study),
        outcomes=list(Outcome),
        in_archive=study is not None,
    )


@router.get("/review/meetings/{meeting_id}/cases/{number}/images/{index}")
async def case_image(
    meeting_id: MeetingId,
    number: CaseNumber,
    index: Annotated[int, Path(ge=1, le=100)],
    _: Reviewer,
    db: DbSession,
    archive: ArchiveClient,
) -> Response:
    """The ``index``-th image of the case, as the platform draws it: pixels only, no header."""
    case = _case_or_404(meeting_or_404(db, meeting_id), number)
    images = await case_images(archive, case.study_uid, platform_results(db, case.study_uid))
    if index > len(images):
        raise HTTPException(404, "No such image in this case.")
    image = images[index - 1]
    png = await picture_png(archive, case.study_uid, image.series_uid, image.instance_uid)
    return Response(png, media_type="image/png", headers=IMAGE_CACHE)


@router.post("/review/meetings/{meeting_id}/cases/{number}/decision")
async def decide(
    meeting_id: MeetingId,
    number: CaseNumber,
    user: Reviewer,
    db: DbSession,
    archive: ArchiveClient,
    trail: Audit,
    outcome: Annotated[Outcome, Form()],
    learning_point: LongText = "",
    follow_up: LongText = "",
) -> Response:
    meeting = meeting_or_404(db, meeting_id)
    case = _case_or_404(meeting, number)
    study = await archive.find_study(case.study_uid)
    identifiers = identifiers_of(study) if study is not None else []
    given = DecisionInput(outcome, scrub(learning_point, identifiers), scrub(follow_up, identifiers))
    try:
        decision, created = record_decision(db, meeting, case, user, given)
    except MeetingClosedError as error:
        raise HTTPException(409, "The meeting has ended: its decisions are final.") from error
    trail.record(
        audit.EventType.AI_REVIEW_DECISION,
        action=audit.Action.CREATE if created else audit.Action.UPDATE,
        object_uid=case.study_uid,
        detail={"review_meeting": meeting.id, "case": number, "outcome": decision.outcome}
        | {"learning_point": decision.learning_point, "follow_up": decision.follow_up},
    )
    return RedirectResponse(f"/review/meetings/{meeting.id}/cases/{number}", status_code=303)


@router.post("/review/meetings/{meeting_id}/end")
def end(meeting_id: MeetingId, _: Reviewer, db: DbSession, trail: Audit) -> Response:
    meeting = meeting_or_404(db, meeting_id)
    try:
        end_meeting(meeting)
    except MeetingClosedError as error:
        raise HTTPException(409, str(error)) from error
    decided = sum(1 for case in meeting.cases if case.decision is not None)
    trail.record(
        audit.EventType.APPLICATION_ACTIVITY,
        action=audit.Action.UPDATE,
        detail={"review_meeting": meeting.id, "event": "end", "cases": len(meeting.cases)}
        | {"decided": decided},
    )
    return RedirectResponse(f"/review/meetings/{meeting.id}", status_code=303)
