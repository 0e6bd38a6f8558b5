"""People who use the platform and the roles that decide what each may do."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Boolean, ForeignKey, String, false, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from openaim.db import Base, UTCDateTime, utcnow
from viewer.access.strength import DEFAULT_MIN_SCORE, weakness


class Role(StrEnum):
    RADIOLOGIST = "radiologist"
    REVIEWER = "reviewer"  # QA lead: runs discrepancy review meetings
    GOVERNANCE = "governance"  # AI governance officer: post-market monitoring
    ADMIN = "admin"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    password_hash: Mapped[str | None] = mapped_column(String(256))  # None: external sign-in only
    # "ISSUER SUBJECT" of an account an OpenID provider vouches for (viewer/access/oidc.py); None: local.
    oidc_subject: Mapped[str | None] = mapped_column(String(512), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Set when an admin chose the password (a new account, a reset): until the user picks their own,
    # every page but the password form sends them there.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Blinded read: the AI stays hidden on a study until this reader has recorded an impression.
    blinded_read: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    role_rows: Mapped[list[UserRole]] = relationship(cascade="all, delete-orphan", lazy="selectin")

    @property
    def roles(self) -> frozenset[Role]:
        return frozenset(Role(row.role) for row in self.role_rows)

    def has_any_role(self, *roles: Role) -> bool:
        return bool(self.roles & set(roles))


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(32), primary_key=True)


_hasher = PasswordHasher()
# Verified against when the user does not exist, so that an unknown name costs as long as a known one.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 hashes any length; a bound keeps a request from costing more


class UserExistsError(ValueError):
    pass


def check_password_rules(password: str, *, username: str = "", min_score: int = DEFAULT_MIN_SCORE) -> None:
    """Raise ValueError, with a sentence a person can act on, when a password may not be used: too short
    or long, breached, containing the user name, or scored under ``min_score`` by zxcvbn."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    problem = weakness(password, username=username, min_score=min_score)
    if problem is not None:
        raise ValueError(problem)


def set_password(user: User, password: str, *, must_change: bool, min_score: int = DEFAULT_MIN_SCORE) -> None:
    """Store a new password's hash; ``must_change`` when someone other than the user chose it."""
    check_password_rules(password, username=user.username, min_score=min_score)
    user.password_hash = _hasher.hash(password)
    user.must_change_password = must_change


def add_user(
    db: Session,
    username: str,
    password: str | None,
    roles: set[Role],
    display_name: str = "",
    *,
    must_change_password: bool = False,
    min_score: int = DEFAULT_MIN_SCORE,
) -> User:
    if not username or len(username) > 64:
        raise ValueError("a username has 1 to 64 characters")
    if not roles:
        raise ValueError("a user needs at least one role")
    if password is not None:
        check_password_rules(password, username=username, min_score=min_score)
    if find_user(db, username) is not None:
        raise UserExistsError(f"user {username!r} already exists")
    user = User(
        username=username,
        display_name=display_name or username,
        password_hash=_hasher.hash(password) if password is not None else None,
        must_change_password=must_change_password and password is not None,
        role_rows=[UserRole(role=Role(role).value) for role in sorted(roles)],
    )
    db.add(user)
    db.flush()
    return user


def find_user(db: Session, username: str) -> User | None:
    return db.scalar(select(User).where(User.username == username))


def check_password(db: Session, username: str, password: str) -> User | None:
    """The active user with this name and password, or None. Takes the same time either way."""
    user = find_user(db, username)
    stored = user.password_hash if user is not None and user.active else None
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if stored is None or user is None:
        return None
    if _hasher.check_needs_rehash(stored):
        user.password_hash = _hasher.hash(password)
    return user
