"""What an admin does to accounts: add one, disable and enable, reset a password, change roles.

The admin pages and the ``openaim user`` commands both come here, so two rules hold whoever asks:
the platform always keeps at least one active admin (nobody, the last admin included, can disable or
demote them), and a disabled account's sessions end at once, as do a reset account's. Each operation
returns an ``AccountChange`` saying who did what to whom, for the audit trail; it never holds a password.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from openaim import audit
from viewer.access.sessions import UserSession
from viewer.access.strength import DEFAULT_MIN_SCORE
from viewer.access.users import Role, User, UserRole, add_user, find_user, set_password

# DICOM PS3.15 A.5.3.11 Security Alert event type codes, by name.
USER_ATTRIBUTES_CHANGED = "UserSecurityAttributesChanged"  # DCM 110137
ROLES_CHANGED = "SecurityRolesChanged"  # DCM 110136


class AccountError(ValueError):
    """A change that was refused; the message says why, for the admin who asked."""


class UnknownUserError(AccountError):
    pass


class LastAdminError(AccountError):
    pass


@dataclass(frozen=True)
class AccountChange:
    """One change to one account, as the audit trail records it."""

    actor: str
    target: str
    change: str  # added, disabled, enabled, password reset, roles changed
    subtype: str
    roles_before: tuple[str, ...] = ()
    roles_after: tuple[str, ...] = ()

    def audit_fields(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"subtype": self.subtype, "target": self.target, "change": self.change}
        if self.roles_before or self.roles_after:
            detail["roles_before"] = list(self.roles_before)
            detail["roles_after"] = list(self.roles_after)
        action = audit.Action.CREATE if self.change == "added" else audit.Action.UPDATE
        return {"action": action, "username": self.actor, "detail": detail}

    def describe(self) -> str:
        if self.change == "roles changed":
            return f"{self.target}: roles are now {', '.join(self.roles_after)}."
        return f"{self.target}: {self.change}."


def generated_password() -> str:
    """A temporary password to hand over once: 16 URL-safe characters, about 96 bits."""
    return secrets.token_urlsafe(12)


def _sorted_roles(roles: set[Role] | frozenset[Role]) -> tuple[str, ...]:
    return tuple(sorted(role.value for role in roles))


def _serialise(db: Session) -> None:
    """One account change at a time on PostgreSQL, so two admins demoting each other at the same moment
    cannot both pass the last-admin check. SQLite already has a single writer."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(7243002)"))


def _other_active_admins(db: Session, user: User) -> int:
    query = (
        select(func.count())
        .select_from(User)
        .join(UserRole, UserRole.user_id == User.id)
        .where(UserRole.role == Role.ADMIN.value, User.active.is_(True), User.id != user.id)
    )
    return db.scalar(query) or 0


def _keep_an_admin(db: Session, user: User, what: str) -> None:
    if user.active and Role.ADMIN in user.roles and _other_active_admins(db, user) == 0:
        raise LastAdminError(
            f"{user.username} is the last active admin and cannot be {what}: make another admin first."
        )


def _target(db: Session, username: str) -> User:
    user = find_user(db, username)
    if user is None:
        raise UnknownUserError(f"There is no user {username!r}.")
    return user


def end_sessions(db: Session, user: User, keep: UserSession | None = None) -> None:
    """Sign the user out everywhere (but ``keep``, the session making the change, when given)."""
    query = delete(UserSession).where(UserSession.user_id == user.id)
    if keep is not None:
        query = query.where(UserSession.token_hash != keep.token_hash)
    db.execute(query)


def add_account(
    db: Session,
    actor: str,
    username: str,
    display_name: str,
    roles: set[Role],
    password: str,
    *,
    must_change: bool = True,
    min_score: int = DEFAULT_MIN_SCORE,
) -> AccountChange:
    """A new account. A password an admin chose must be changed at first sign-in; ``must_change=False``
    is for the command line, where the person typing it is usually its owner (the first admin)."""
    add_user(
        db, username, password, roles, display_name, must_change_password=must_change, min_score=min_score
    )
    return AccountChange(actor, username, "added", USER_ATTRIBUTES_CHANGED, (), _sorted_roles(roles))


def disable(db: Session, actor: str, username: str) -> AccountChange:
    _serialise(db)
    user = _target(db, username)
    _keep_an_admin(db, user, "disabled")
    user.active = False
    end_sessions(db, user)
    return AccountChange(actor, username, "disabled", USER_ATTRIBUTES_CHANGED)


def enable(db: Session, actor: str, username: str) -> AccountChange:
    user = _target(db, username)
    user.active = True
    return AccountChange(actor, username, "enabled", USER_ATTRIBUTES_CHANGED)


def reset_password(
    db: Session, actor: str, username: str, password: str, *, min_score: int = DEFAULT_MIN_SCORE
) -> AccountChange:
    """Set a password the admin hands over; it works for one sign-in, which then asks for a new one.
    Sessions opened with the old password end."""
    user = _target(db, username)
    set_password(user, password, must_change=True, min_score=min_score)
    end_sessions(db, user)
    return AccountChange(actor, username, "password reset", USER_ATTRIBUTES_CHANGED)


def set_roles(db: Session, actor: str, username: str, roles: set[Role]) -> AccountChange:
    if not roles:
        raise AccountError("A user needs at least one role; disable the account instead.")
    _serialise(db)
    user = _target(db, username)
    before = _sorted_roles(user.roles)
    if Role.ADMIN not in roles:
        _keep_an_admin(db, user, "removed from the admin role")
    wanted = {role.value for role in roles}
    user.role_rows = [row for row in user.role_rows if row.role in wanted] + [
        UserRole(role=value) for value in sorted(wanted - {row.role for row in user.role_rows})
    ]
    db.flush()
    return AccountChange(actor, username, "roles changed", ROLES_CHANGED, before, _sorted_roles(roles))
