"""A reader's own feedback history: every version of every save, newest first, so a radiologist can see
what they told the AI and when. Readers see only their own; admins may look at anyone's, or everyone's.

A page at a time, read along the (created_at, id) and (user_id, created_at, id) indexes (migration 0007):
the next page starts below the last row shown, so a page costs the same at a million rows as at ten."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import Row, select, tuple_
from sqlalchemy.orm import Session

from openaim import audit
from viewer.access.deps import Audit, DbSession, Reader
from viewer.access.users import Role, User, find_user
from viewer.feedback.records import Feedback, reasons_of
from viewer.reading.study_labels import study_labels
from viewer.row_ids import OptionalRowIdQuery
from viewer.templates import render

router = APIRouter()

PAGE_ROWS = 100
EVERYONE = "*"


@router.get("/my/feedback")
def feedback_history(
    request: Request,
    user: Reader,
    db: DbSession,
    trail: Audit,
    reader: Annotated[str, Query(alias="user", max_length=64, pattern=r"^[^\x00-\x1f]*$")] = "",
    before: OptionalRowIdQuery = None,
) -> Response:
    is_admin = user.has_any_role(Role.ADMIN)
    if reader and reader != user.username and not is_admin:
        raise HTTPException(403, "Readers see their own feedback only.")
    whose = reader or (EVERYONE if is_admin else user.username)
    user_id = None
    if whose != EVERYONE:
        found = find_user(db, whose)
        if found is None:
            raise HTTPException(404, "No such user.")
        user_id = found.id
    rows = history_page(db, user_id, before)
    trail.record(
        audit.EventType.QUERY,
        action=audit.Action.EXECUTE,
        detail={"scope": "feedback history", "user": whose, "rows": len(rows)},
    )
    readers = list(db.scalars(select(User).order_by(User.username))) if is_admin else []
    older = rows[PAGE_ROWS - 1][0].id if len(rows) > PAGE_ROWS else None
    shown = rows[:PAGE_ROWS]
    return render(
        request,
        "feedback/my_feedback.html",
        rows=[(row, name, reasons_of(row)) for row, name in shown],
        labels=study_labels(db, (row.study_uid for row, _ in shown)),
        whose=whose,
        everyone=EVERYONE,
        readers=readers,
        is_admin=is_admin,
        limit=PAGE_ROWS,
        older=f"/my/feedback?{urlencode({'user': whose, 'before': older})}" if older else None,
        newest=f"/my/feedback?{urlencode({'user': whose})}" if before else None,
    )


def history_page(db: Session, user_id: int | None, before: int | None = None) -> list[Row[Feedback, str]]:
    """One reader's rows (everyone's for None), newest first, from below the row ``before``: PAGE_ROWS
    and one more, which says whether there is an older page."""
    query = select(Feedback, User.display_name).join(User, User.id == Feedback.user_id)
    if user_id is not None:
        query = query.where(Feedback.user_id == user_id)
    if before is not None and (last := db.get(Feedback, before)) is not None:
        query = query.where(tuple_(Feedback.created_at, Feedback.id) < tuple_(last.created_at, last.id))
    newest_first = query.order_by(Feedback.created_at.desc(), Feedback.id.desc())
    return list(db.execute(newest_first.limit(PAGE_ROWS + 1)))
