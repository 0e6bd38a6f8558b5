"""Dependency aliases: the one place where routes get the database, the archive, the signed-in user
and the roles they need. A route names an alias (``Reader``, ``Admin``...) and cannot forget the check.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from openaim import audit
from openaim.settings import Settings
from viewer.access.session_memo import SessionMemo, SignedIn, look_up
from viewer.access.sessions import POLL_HEADER, UserSession, find_session
from viewer.access.users import Role, User
from viewer.archive.client import Archive

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"

PendingEvent = tuple[audit.EventType, dict[str, Any]]  # a request's audit event, appended when it ends


@dataclass(frozen=True)
class PageUser:
    """What a page shows of the signed-in user, detached from the database session."""

    display_name: str
    roles: tuple[str, ...]
    csrf_token: str
    must_change_password: bool = False

    @classmethod
    def of(cls, session: UserSession) -> PageUser:
        roles = tuple(sorted(role.value for role in session.user.roles))
        user = session.user
        return cls(user.display_name, roles, session.csrf_token, user.must_change_password)


class NotSignedInError(Exception):
    """Raised by ``current_user``; the app answers with the sign-in page (HTML) or 401 (API)."""


class PasswordChangeRequiredError(Exception):
    """Raised by ``current_user`` while the user still has a password an admin chose; the app answers
    with the password form (HTML) or 403 (API)."""


def cookie_names(settings: Settings) -> tuple[str, str]:
    """Session and pre-sign-in CSRF cookies. ``__Host-`` pins them to this origin over HTTPS."""
    prefix = "__Host-" if settings.cookie_secure else ""
    return f"{prefix}openaim_session", f"{prefix}openaim_csrf"


def idle_limit(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.session_idle_minutes)


def is_use(request: Request) -> bool:
    """Whether this request is someone using the session, not a page polling by itself."""
    return POLL_HEADER not in request.headers


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[Session]:
    """A session per request, committed when the route succeeds and rolled back when it fails.

    The request's audit events are appended at the end of the route's own transaction: an action and its
    event commit together (a crash between two commits used to leave actions without their event). When
    the route fails, its work is rolled back and its events are appended afterwards in a transaction of
    their own, marked with the failure: what they record may have happened outside the database (a
    store into the archive), and a refusal is an event too.
    """
    factory: sessionmaker[Session] = request.app.state.db
    pending: list[PendingEvent] = []
    request.state.audit_events = pending
    with factory() as session:
        try:
            yield session
            commit_with_events(session, pending)
        except BaseException as error:
            session.rollback()  # first: on SQLite the failure's events need the write lock it may hold
            _record_after_failure(factory, pending, error)
            raise


def commit_with_events(db: Session, pending: list[PendingEvent]) -> None:
    """Append the events in the transaction, then commit both."""
    for event_type, fields in pending:
        audit.append(db, event_type, **fields)
    db.commit()
    pending.clear()


def _record_after_failure(
    factory: sessionmaker[Session], pending: list[PendingEvent], error: BaseException
) -> None:
    failure = f"HTTP {error.status_code}" if isinstance(error, HTTPException) else type(error).__name__
    for event_type, fields in pending:
        detail = {**(fields.get("detail") or {}), "request_failed": failure}
        audit.record(factory, event_type, **{**fields, "detail": detail})


async def get_archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


# scope="function": committed before the response is sent. By default FastAPI ends a yield dependency
# after sending, and a browser following a 303 at once (sign-in, a form) could read the state from before.
DbSession = Annotated[Session, Depends(get_db, scope="function")]
ArchiveClient = Annotated[Archive, Depends(get_archive)]
AppSettings = Annotated[Settings, Depends(get_settings)]


def signed_in_session(request: Request, db: DbSession) -> UserSession | None:
    """The live session named by the request's cookie (FastAPI resolves it once per request)."""
    settings: Settings = request.app.state.settings
    token = request.cookies.get(cookie_names(settings)[0])
    session = find_session(db, token, idle_limit(settings), touch=is_use(request)) if token else None
    if session is not None:  # for page templates, which may render after this database session ends
        request.state.page_user = PageUser.of(session)
    return session


async def current_user(
    session: Annotated[UserSession | None, Depends(signed_in_session)],
) -> User:
    if session is None:
        raise NotSignedInError
    if session.user.must_change_password:
        raise PasswordChangeRequiredError
    return session.user


CurrentUser = Annotated[User, Depends(current_user)]


async def current_session(
    session: Annotated[UserSession | None, Depends(signed_in_session)],
) -> UserSession:
    """The signed-in session even while its user must change their password: only the password form
    takes this instead of ``CurrentUser``."""
    if session is None:
        raise NotSignedInError
    return session


PasswordChanger = Annotated[UserSession, Depends(current_session)]


async def memo_session(request: Request) -> SignedIn | None:
    """Who the request's cookie signs in, or None. A request that changes something is always checked
    against the database; one that only reads may take the answer ``SessionMemo`` kept from a moment ago
    (session_memo.py says why and what it costs)."""
    token = request.cookies.get(cookie_names(request.app.state.settings)[0])
    if not token:
        return None
    memo: SessionMemo = request.app.state.session_memo
    found = None if request.method in UNSAFE_METHODS else memo.get(token)
    if found is None:
        settings: Settings = request.app.state.settings
        found = await run_in_threadpool(
            look_up, request.app.state.db, token, idle_limit(settings), touch=is_use(request)
        )
        if found is None:
            memo.forget(token)
            return None
        memo.put(token, found)
    roles = tuple(sorted(role.value for role in found.roles))
    request.state.page_user = PageUser(
        found.display_name, roles, found.csrf_token, found.must_change_password
    )
    return found


async def signed_in_user(found: Annotated[SignedIn | None, Depends(memo_session)]) -> SignedIn:
    """The check every signed-in route goes through (``create_app`` puts it on each router)."""
    if found is None:
        raise NotSignedInError
    if found.must_change_password:
        raise PasswordChangeRequiredError
    return found


SignedInUser = Annotated[SignedIn, Depends(signed_in_user)]


def refuse_unless(who: User | SignedIn, roles: tuple[Role, ...]) -> None:
    """The one role check, for a user from the database and for one from the session memo alike."""
    if not who.has_any_role(*roles):
        raise HTTPException(403, "Your role does not allow this.")


def require_roles(*roles: Role) -> Callable[[User], Awaitable[User]]:
    async def check(user: CurrentUser) -> User:
        refuse_unless(user, roles)
        return user

    return check


READ_ROLES = (Role.RADIOLOGIST, Role.REVIEWER, Role.ADMIN)
Reader = Annotated[User, Depends(require_roles(*READ_ROLES))]
Admin = Annotated[User, Depends(require_roles(Role.ADMIN))]
Reviewer = Annotated[User, Depends(require_roles(Role.REVIEWER, Role.ADMIN))]
# Governance (post-market monitoring) reads what the models are and what was done with them: model cards,
# the Models page (changing a mode stays the admin's) and the audit log. It reads no images.
Monitor = Annotated[User, Depends(require_roles(Role.GOVERNANCE, Role.ADMIN))]
CardReader = Annotated[User, Depends(require_roles(*READ_ROLES, Role.GOVERNANCE))]


async def image_reader(signed_in: SignedInUser) -> SignedIn:
    """``Reader`` for the read-only pixel routes (frames, series bulk data, rendered images, thumbnails):
    the same roles, checked against the memo of live sessions, with no database session for the request."""
    refuse_unless(signed_in, READ_ROLES)
    return signed_in


ImageReader = Annotated[SignedIn, Depends(image_reader)]


async def check_csrf(request: Request, session: Annotated[SignedIn | None, Depends(memo_session)]) -> None:
    """Every state-changing request carries the CSRF token of its session (or, before sign-in, the
    token of the sign-in form's cookie), in a header (htmx, fetch) or a form field."""
    if request.method not in UNSAFE_METHODS:
        return
    if session is not None:
        expected = session.csrf_token
    else:
        expected = request.cookies.get(cookie_names(request.app.state.settings)[1], "")
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        given = str((await request.form()).get(CSRF_FIELD, ""))
    if not expected or not given or not secrets.compare_digest(expected, given):
        raise HTTPException(403, "The form has expired or did not come from this site. Reload the page.")


class AuditTrail:
    """Audit events of the current request (who, from where), appended in the request's transaction when
    the route has done its work (see ``get_db``)."""

    def __init__(self, request: Request, session: UserSession | None) -> None:
        self._pending: list[PendingEvent] = request.state.audit_events
        self._username = session.user.username if session is not None else None
        self._source = request.client.host if request.client else None

    def record(self, event_type: audit.EventType, **fields: Any) -> None:
        fields.setdefault("username", self._username)
        fields.setdefault("source", self._source)
        self._pending.append((event_type, fields))

    def commit(self, db: Session) -> None:
        """Commit the route's work now, with the events recorded so far, instead of when the route ends: a
        route that writes from the event loop's thread pool lets the write lock go there, without waiting
        for the loop to end the request."""
        commit_with_events(db, self._pending)


async def get_audit_trail(
    request: Request, session: Annotated[UserSession | None, Depends(signed_in_session)]
) -> AuditTrail:
    return AuditTrail(request, session)


Audit = Annotated[AuditTrail, Depends(get_audit_trail)]
