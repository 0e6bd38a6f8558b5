"""Sign-in and sign-out pages. Password sign-in here; an OIDC callback would end the same way, by
calling ``viewer.access.sessions.start_session`` for the user its identity provider vouched for."""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from openaim import audit
from openaim.settings import Settings
from viewer.access import throttle
from viewer.access.deps import (
    AppSettings,
    Audit,
    DbSession,
    check_csrf,
    cookie_names,
    signed_in_session,
)
from viewer.access.sessions import UserSession, end_session, start_session
from viewer.access.users import User, check_password
from viewer.templates import render

router = APIRouter(dependencies=[Depends(check_csrf)])

GENERIC_FAILURE = "Unknown user name or wrong password."


def safe_next(target: str | None) -> str:
    """Only paths on this site: never an open redirect to another host."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


def _signin_page(
    request: Request, settings: AppSettings, next_url: str, error: str = "", status_code: int = 200
) -> Response:
    csrf_cookie = cookie_names(settings)[1]
    token = request.cookies.get(csrf_cookie) or secrets.token_urlsafe(32)
    response = render(
        request,
        "access/signin.html",
        status_code=status_code,
        csrf_token=token,
        next_url=safe_next(next_url),
        error=error,
        oidc_name=settings.oidc_display_name if settings.oidc_issuer else None,
    )
    response.set_cookie(csrf_cookie, token, httponly=True, secure=settings.cookie_secure, samesite="strict")
    return response


@router.get("/signin")
def signin_form(request: Request, settings: AppSettings, next: str = "/") -> Response:
    return _signin_page(request, settings, next)


@router.post("/signin")
def signin(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    trail: Audit,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    policy = throttle.Policy.of(settings)
    source = (request.client.host if request.client else None) or throttle.UNKNOWN_SOURCE
    factory = request.app.state.db
    _, refused = throttle.start_attempt(factory, policy, username, source)
    user = check_password(db, username, password) if refused is None else None
    if user is None:
        reason = refused.value if refused is not None else "unknown user or wrong password"
        trail.record(
            audit.EventType.USER_AUTHENTICATION,
            action=audit.Action.EXECUTE,
            outcome=audit.Outcome.MINOR_FAILURE,
            username=username,
            detail={"subtype": "Login", "reason": reason},
        )
        if refused is None and throttle.failed(factory, policy, username, source):
            trail.record(
                audit.EventType.SECURITY_ALERT,
                action=audit.Action.EXECUTE,
                outcome=audit.Outcome.SERIOUS_FAILURE,
                username=username,
                detail={"subtype": "Lockout", "reason": throttle.Refusal.PAIR_LOCKED.value},
            )
        # The same answer whatever the reason: a lock tells a guesser nothing about the password.
        return _signin_page(request, settings, next, GENERIC_FAILURE, status_code=401)
    throttle.succeeded(factory, policy, username, source)
    trail.record(
        audit.EventType.USER_AUTHENTICATION,
        action=audit.Action.EXECUTE,
        username=user.username,
        detail={"subtype": "Login", "method": "password"},
    )
    return signed_in_response(db, settings, user, next)


def signed_in_response(db: Session, settings: Settings, user: User, next_url: str) -> Response:
    """Start the user's session and send them on: every way of signing in ends here."""
    token, _ = start_session(db, user, settings.session_hours)
    target = safe_next(next_url)
    if user.must_change_password:  # a password an admin chose opens nothing but the password form
        target = f"/account/password?next={quote(target)}"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        cookie_names(settings)[0],
        token,
        max_age=int(settings.session_hours * 3600),
        httponly=True,
        secure=settings.cookie_secure,
        samesite="lax",
    )
    return response


@router.post("/signout")
def signout(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    trail: Audit,
    session: Annotated[UserSession | None, Depends(signed_in_session)],
) -> Response:
    session_cookie = cookie_names(settings)[0]
    if session is not None:
        end_session(db, request.cookies[session_cookie])
        request.app.state.session_memo.forget(request.cookies[session_cookie])
        trail.record(
            audit.EventType.USER_AUTHENTICATION,
            action=audit.Action.EXECUTE,
            detail={"subtype": "Logout"},
        )
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(session_cookie, secure=settings.cookie_secure, httponly=True)
    return response
