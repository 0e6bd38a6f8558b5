"""A reader's own feedback history: every version of every save, newest first, so a radiologist can see
what they told the AI and when. Readers see only their own; admins may look at anyone's, or everyone's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from openaim import audit
from viewer.access.deps import Audit, DbSession, Reader
from viewer.access.users import Role, User, find_user
from viewer.feedback.records import Feedback, reasons_of
from viewer.templates import render

router = APIRouter()

MAX_ROWS = 500
EVERYONE = "*"


@router.get("/my/feedback")
def feedback_history(
    request: Request,
    user: Reader,
    db: DbSession,
    trail: Audit,
    reader: Annotated[str, Query(alias="user", max_length=64, pattern=r"^[^\x00-\x1f]*$")] = "",
) -> Response:
    is_admin = user.has_any_role(Role.ADMIN)
    if reader and reader != user.username and not is_admin:
        raise HTTPException(403, "Readers see their own feedback only.")
    whose = reader or (EVERYONE if is_admin else user.username)
    query = select(Feedback, User.display_name).join(User, User.id == Feedback.user_id)
    if whose != EVERYONE:
        found = find_user(db, whose)
        if found is None:
            raise HTTPException(404, "No such user.")
        query = query.where(Feedback.user_id == found.id)
    rows = db.execute(query.order_by(Feedback.created_at.desc(), Feedback.id.desc()).limit(MAX_ROWS)).all()
    trail.record(
        audit.EventType.QUERY,
        action=audit.Action.EXECUTE,
        detail={"scope": "feedback history", "user": whose, "rows": len(rows)},
    )
    readers = list(db.scalars(select(User).order_by(User.username))) if is_admin else []
    return render(
        request,
        "feedback/my_feedback.html",
        rows=[(row, name, reasons_of(row)) for row, name in rows],
        whose=whose,
        everyone=EVERYONE,
        readers=readers,
        is_admin=is_admin,
        limit=MAX_ROWS,
    )
