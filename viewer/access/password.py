"""Changing one's own password. The only page a user whose password an admin chose (a new account, a
reset) may open until they have picked their own; ``current_user`` sends them here from every other."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from openaim import audit
from viewer.access.accounts import USER_ATTRIBUTES_CHANGED, end_sessions
from viewer.access.deps import AppSettings, Audit, DbSession, PasswordChanger, check_csrf, current_session
from viewer.access.signin import safe_next
from viewer.access.users import MAX_PASSWORD_LENGTH, check_password, set_password
from viewer.templates import render

# Signed in first (401 before 403, as on every other router), then CSRF; not ``current_user``, which
# refuses exactly the users this page is for.
router = APIRouter(dependencies=[Depends(current_session), Depends(check_csrf)])

PasswordField = Annotated[str, Form(max_length=MAX_PASSWORD_LENGTH)]


def _form(
    request: Request, session: PasswordChanger, next_url: str, error: str = "", status_code: int = 200
) -> Response:
    return render(
        request,
        "access/password.html",
        status_code=status_code,
        forced=session.user.must_change_password,
        next_url=safe_next(next_url),
        error=error,
    )


@router.get("/account/password")
def password_form(request: Request, session: PasswordChanger, next: str = "/") -> Response:
    return _form(request, session, next)


@router.post("/account/password")
def change_password(
    request: Request,
    session: PasswordChanger,
    db: DbSession,
    settings: AppSettings,
    trail: Audit,
    current_password: PasswordField,
    new_password: PasswordField,
    repeat_password: PasswordField,
    next: Annotated[str, Form()] = "/",
) -> Response:
    user = session.user
    error = ""
    if check_password(db, user.username, current_password) is None:
        error = "The current password is wrong."
    elif new_password != repeat_password:
        error = "The two new passwords differ."
    elif new_password == current_password:
        error = "Choose a password other than the current one."
    else:
        try:
            set_password(user, new_password, must_change=False, min_score=settings.password_min_score)
        except ValueError as problem:
            error = str(problem).capitalize() + "."
    if error:
        return _form(request, session, next, error, status_code=400)
    end_sessions(db, user, keep=session)  # whoever knew the old password is signed out elsewhere
    request.app.state.session_memo.forget_all()
    trail.record(
        audit.EventType.SECURITY_ALERT,
        action=audit.Action.UPDATE,
        detail={"subtype": USER_ATTRIBUTES_CHANGED, "target": user.username, "change": "password changed"},
    )
    return RedirectResponse(safe_next(next), status_code=303)
