"""Server-side sign-in sessions. The browser holds a random token; the database holds its hash.

Any way of proving who someone is (the password form today, an OIDC callback later) ends by calling
``start_session`` for the matching ``User``; nothing else in the platform depends on how they signed in.

A session ends ``Settings.session_hours`` after it began, or sooner when unused for
``Settings.session_idle_minutes``. Requests a page makes by itself (the worklist polling for new studies,
the AI panel for its results) send ``POLL_HEADER`` and do not count as use: a worklist left open in an
empty reading room would otherwise keep its session alive for the whole twelve hours.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import ForeignKey, String, delete, select
from sqlalchemy.orm import Mapped, Session, joinedload, mapped_column, relationship

from openaim.db import Base, UTCDateTime, utcnow
from viewer.access.users import User

POLL_HEADER: Final = "X-OpenAIM-Poll"
# Last use is written at most once a minute per session (or a tenth of the idle time, if shorter): not a
# database write for each of the hundreds of frames a viewport loads. A session in use may so be seen
# as up to a minute older than it is.
SEEN_EVERY = timedelta(minutes=1)


class UserSession(Base):
    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    user: Mapped[User] = relationship(lazy="joined")


def token_hash_of(token: str) -> str:
    """What the database keeps of a session token (and what the session memo is keyed by)."""
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(db: Session, user: User, hours: float) -> tuple[str, UserSession]:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = UserSession(
        token_hash=token_hash_of(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=hours),
    )
    db.add(row)
    db.flush()
    return token, row


def find_session(
    db: Session, token: str, idle: timedelta | None = None, *, touch: bool = True
) -> UserSession | None:
    """The live session for this token, or None when unknown, expired, unused for longer than ``idle``
    or its user is disabled. ``touch``: this request is use of the session (the caller commits)."""
    # One query for the session, its user and the roles: this runs on every request, pixels included.
    query = (
        select(UserSession)
        .options(joinedload(UserSession.user).joinedload(User.role_rows))
        .where(UserSession.token_hash == token_hash_of(token))
    )
    row = db.scalars(query).unique().one_or_none()
    now = utcnow()
    if row is None or row.expires_at <= now or not row.user.active:
        return None
    if idle is not None and row.last_seen_at + idle <= now:
        return None
    if touch and now - row.last_seen_at >= min(SEEN_EVERY, idle / 10 if idle is not None else SEEN_EVERY):
        row.last_seen_at = now
    return row


def end_session(db: Session, token: str) -> None:
    db.execute(delete(UserSession).where(UserSession.token_hash == token_hash_of(token)))
