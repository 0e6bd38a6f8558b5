"""User administration for admins: the list of users, adding one, and on each user's page disabling and
enabling, resetting the password and changing roles.

The rules live in ``viewer.access.accounts`` (shared with the ``openaim user`` commands): the last active
admin stays, a disabled or reset account is signed out at once. Every change, and every refused one, is
audited with who did what to whom. A password an admin sets, typed or generated, is shown once, in the
answer to the form that set it, and its owner must change it at the next sign-in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Path, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from openaim import audit
from viewer.access import accounts
from viewer.access.accounts import AccountChange, AccountError
from viewer.access.deps import Admin, AppSettings, Audit, DbSession
from viewer.access.users import MAX_PASSWORD_LENGTH, Role, User, UserExistsError, find_user
from viewer.templates import render

router = APIRouter()

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"  # safe in a URL path and a CSV cell
Username = Annotated[str, Path(max_length=64)]
RolesField = Annotated[list[Role] | None, Form()]
OptionalPassword = Annotated[str, Form(max_length=MAX_PASSWORD_LENGTH)]


@dataclass(frozen=True)
class UserRow:
    """A user as the pages show one, detached from the database session."""

    username: str
    display_name: str
    roles: tuple[str, ...]
    active: bool
    must_change_password: bool
    external: bool  # no password here: signs in through another provider
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserRow:
        return cls(
            username=user.username,
            display_name=user.display_name,
            roles=tuple(sorted(role.value for role in user.roles)),
            active=user.active,
            must_change_password=user.must_change_password,
            external=user.password_hash is None,
            created_at=user.created_at,
        )


def _users(db: Session) -> list[UserRow]:
    return [UserRow.of(user) for user in db.scalars(select(User).order_by(User.username))]


def _users_page(request: Request, db: Session, status_code: int = 200, **context: Any) -> Response:
    context.setdefault("notice", "")
    context.setdefault("error", "")
    context.setdefault("handover", None)
    context.setdefault("form", {})
    return render(
        request,
        "admin/users.html",
        status_code=status_code,
        users=_users(db),
        all_roles=[role.value for role in Role],
        **context,
    )


def _user_page(
    request: Request, db: Session, username: str, status_code: int = 200, **context: Any
) -> Response:
    user = find_user(db, username)
    if user is None:
        raise HTTPException(404, "There is no such user.")
    context.setdefault("notice", "")
    context.setdefault("error", "")
    context.setdefault("handover", None)
    return render(
        request,
        "admin/user.html",
        status_code=status_code,
        account=UserRow.of(user),
        all_roles=[role.value for role in Role],
        **context,
    )


@dataclass(frozen=True)
class Handover:
    """A password to pass on to its owner, shown in this one answer and never again."""

    username: str
    password: str
    generated: bool


def _sentence(error: Exception) -> str:
    text = str(error)
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _record_refusal(trail: Audit, actor: str, target: str, change: str, reason: str) -> None:
    detail = {"subtype": accounts.USER_ATTRIBUTES_CHANGED, "target": target, "change": change}
    trail.record(
        audit.EventType.SECURITY_ALERT,
        action=audit.Action.UPDATE,
        outcome=audit.Outcome.MINOR_FAILURE,
        username=actor,
        detail={**detail, "refused": reason},
    )


def _apply(
    request: Request,
    db: Session,
    trail: Audit,
    admin: User,
    username: str,
    change: Callable[[], AccountChange],
    attempt: str,
    handover: Handover | None = None,
) -> Response:
    """Make one change to a user and show their page again, saying what happened or why not.

    Every refusal is raised before anything is written, so answering with the page (and letting the
    request's transaction commit) keeps nothing of a refused change.
    """
    try:
        done = change()
    except AccountError as error:
        _record_refusal(trail, admin.username, username, attempt, str(error))
        status = 404 if isinstance(error, accounts.UnknownUserError) else 409
        if status == 404:
            raise HTTPException(404, str(error)) from error
        return _user_page(request, db, username, status, error=_sentence(error))
    except ValueError as error:  # a password the rules refuse
        _record_refusal(trail, admin.username, username, attempt, str(error))
        return _user_page(request, db, username, 400, error=_sentence(error))
    trail.record(audit.EventType.SECURITY_ALERT, **done.audit_fields())
    request.app.state.session_memo.forget_all()  # the user's sessions may have ended or changed roles
    return _user_page(request, db, username, notice=done.describe(), handover=handover)


@router.get("/admin/users")
def users_page(request: Request, _: Admin, db: DbSession) -> Response:
    return _users_page(request, db)


@router.post("/admin/users")
def add_user(
    request: Request,
    admin: Admin,
    db: DbSession,
    settings: AppSettings,
    trail: Audit,
    username: Annotated[str, Form(max_length=64)],
    display_name: Annotated[str, Form(max_length=128)] = "",
    roles: RolesField = None,
    password: OptionalPassword = "",
) -> Response:
    """Add an account. A blank password is generated; either way it is shown once and must be changed."""
    chosen = password or accounts.generated_password()
    wanted = set(roles or [])
    form = {"username": username, "display_name": display_name, "roles": sorted(r.value for r in wanted)}
    try:
        if not re.fullmatch(USERNAME_PATTERN, username):
            raise AccountError(
                "A user name has 1 to 64 letters, digits and . _ @ -, and starts with a letter or digit"
            )
        change = accounts.add_account(
            db, admin.username, username, display_name, wanted, chosen, min_score=settings.password_min_score
        )
    except ValueError as error:  # AccountError, UserExistsError, a refused password, no role
        _record_refusal(trail, admin.username, username, "added", str(error))
        status = 409 if isinstance(error, UserExistsError) else 400
        return _users_page(request, db, status, error=_sentence(error), form=form)
    trail.record(audit.EventType.SECURITY_ALERT, **change.audit_fields())
    handover = Handover(username, chosen, generated=not password)
    return _users_page(request, db, notice=change.describe(), handover=handover)


@router.get("/admin/users/{username}")
def user_page(request: Request, username: Username, _: Admin, db: DbSession) -> Response:
    return _user_page(request, db, username)


@router.post("/admin/users/{username}/disable")
def disable_user(request: Request, username: Username, admin: Admin, db: DbSession, trail: Audit) -> Response:
    """Disable an account and end its sessions; the last active admin cannot be disabled."""
    change = partial(accounts.disable, db, admin.username, username)
    return _apply(request, db, trail, admin, username, change, "disabled")


@router.post("/admin/users/{username}/enable")
def enable_user(request: Request, username: Username, admin: Admin, db: DbSession, trail: Audit) -> Response:
    change = partial(accounts.enable, db, admin.username, username)
    return _apply(request, db, trail, admin, username, change, "enabled")


@router.post("/admin/users/{username}/roles")
def change_roles(
    request: Request,
    username: Username,
    admin: Admin,
    db: DbSession,
    trail: Audit,
    roles: RolesField = None,
) -> Response:
    """Set the account's roles; the last active admin keeps the admin role."""
    wanted = set(roles or [])
    change = partial(accounts.set_roles, db, admin.username, username, wanted)
    return _apply(request, db, trail, admin, username, change, "roles changed")


@router.post("/admin/users/{username}/password")
def reset_password(
    request: Request,
    username: Username,
    admin: Admin,
    db: DbSession,
    settings: AppSettings,
    trail: Audit,
    password: OptionalPassword = "",
) -> Response:
    """Reset a password to one the admin typed, or a generated one when blank; it is shown once, must be
    changed at the next sign-in, and the account's sessions end."""
    chosen = password or accounts.generated_password()
    change = partial(
        accounts.reset_password, db, admin.username, username, chosen, min_score=settings.password_min_score
    )
    handover = Handover(username, chosen, generated=not password)
    return _apply(request, db, trail, admin, username, change, "password reset", handover)
