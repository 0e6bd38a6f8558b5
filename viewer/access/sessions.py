"""Server-side sign-in sessions. The browser holds a random token; the database holds its hash.

Any way of proving who someone is (the password form today, an OIDC callback later) ends by calling
``start_session`` for the matching ``User``; nothing else in the platform depends on how they signed in.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, String, delete, select
from sqlalchemy.orm import Mapped, Session, joinedload, mapped_column, relationship

from openaim.db import Base, UTCDateTime, utcnow
from viewer.access.users import User


class UserSession(Base):
    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    user: Mapped[User] = relationship(lazy="joined")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(db: Session, user: User, hours: float) -> tuple[str, UserSession]:
    token = secrets.token_urlsafe(32)
    row = UserSession(
        token_hash=_hash(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + timedelta(hours=hours),
    )
    db.add(row)
    db.flush()
    return token, row


def find_session(db: Session, token: str) -> UserSession | None:
    """The live session for this token, or None when unknown, expired or its user is disabled."""
    # One query for the session, its user and the roles: this runs on every request, pixels included.
    query = (
        select(UserSession)
        .options(joinedload(UserSession.user).joinedload(User.role_rows))
        .where(UserSession.token_hash == _hash(token))
    )
    row = db.scalars(query).unique().one_or_none()
    if row is None or row.expires_at <= utcnow() or not row.user.active:
        return None
    return row


def end_session(db: Session, token: str) -> None:
    db.execute(delete(UserSession).where(UserSession.token_hash == _hash(token)))
