"""Failed password sign-ins, kept in the database so that every viewer process sees the same count.

The trade-off chosen (issue 15 item 6): a lock that an attacker can set cheaply on someone else's account
is itself an attack, so the hard lock is per (username, source address) pair:

* A pair with ``signin_max_failures`` failures within ``signin_failure_window_s`` is refused, right
  password or not, until ``signin_lockout_s`` after its last failure; after that each further failure
  locks it again at once (one guess per lock period). An attacker locks out only themselves.
* Wide limits stop guessing spread over many addresses (one username) or many usernames (one address):
  past ``signin_username_max_failures`` failures for a username, or ``signin_source_max_failures`` from
  an address, in the window, that username or address is refused too, except for pairs that signed in
  successfully within ``signin_known_pair_days``: the reader at their usual workstation still signs in
  while someone elsewhere guesses their password. Someone signing in from a new address while their
  username is under attack waits for the attack to stop (or uses the hospital's OIDC sign-in).

The source is the address that connected to the viewer (uvicorn runs without proxy headers). Behind a
reverse proxy every pair would share the proxy's address and the pair lock becomes a per-username lock.
A successful sign-in clears the pair's failures and marks the pair known. Each attempt is counted in
its own short transaction before its password is checked (``start_attempt``), so attempts sent in
parallel, by any process, are judged by the ones before them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Boolean, ColumnElement, Index, String, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from openaim.db import Base, UTCDateTime, transaction, utcnow
from openaim.settings import Settings

UNKNOWN_SOURCE = "unknown"


class SignInAttempt(Base):
    """A failed sign-in (``succeeded`` false), or the last success of a (username, source) pair."""

    __tablename__ = "signin_attempts"
    __table_args__ = (
        Index("ix_signin_attempts_pair", "username", "source", "attempted_at"),
        Index("ix_signin_attempts_source", "source", "attempted_at"),
        Index("ix_signin_attempts_attempted_at", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    succeeded: Mapped[bool] = mapped_column(Boolean)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Refusal(StrEnum):
    PAIR_LOCKED = "too many failures from this address"
    USERNAME_THROTTLED = "too many failures for this username"
    SOURCE_THROTTLED = "too many failures from this address, all usernames"


@dataclass(frozen=True)
class Policy:
    max_failures: int
    window: timedelta
    lockout: timedelta
    username_max_failures: int
    source_max_failures: int
    known_pair: timedelta

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(
            settings.signin_max_failures,
            timedelta(seconds=settings.signin_failure_window_s),
            timedelta(seconds=settings.signin_lockout_s),
            settings.signin_username_max_failures,
            settings.signin_source_max_failures,
            timedelta(days=settings.signin_known_pair_days),
        )


def start_attempt(
    factory: sessionmaker[Session], policy: Policy, username: str, source: str
) -> tuple[int, Refusal | None]:
    """Count an attempt before its password is checked, and say whether it is refused.

    The attempt is written (as a failure, until it succeeds) and committed at once, and judged by the
    attempts written before it: requests sent in parallel see each other, so a burst of guesses gets no
    more than ``max_failures`` past the lock. A refused attempt is taken back: it checked no password.
    """
    now = utcnow()
    with transaction(factory) as db:
        # Rows no limit looks at any more: the table stays as small as the last window's failures.
        old = SignInAttempt.attempted_at < now - policy.window - policy.lockout
        db.execute(delete(SignInAttempt).where(SignInAttempt.succeeded.is_(False), old))
        row = SignInAttempt(username=username, source=source, succeeded=False, attempted_at=now)
        db.add(row)
        db.flush()
        attempt_id = row.id
    with factory() as db:
        refused = _refusal(db, policy, username, source, attempt_id, now)
    if refused is not None:
        with transaction(factory) as db:
            db.execute(delete(SignInAttempt).where(SignInAttempt.id == attempt_id))
    return attempt_id, refused


def _refusal(
    db: Session, policy: Policy, username: str, source: str, attempt_id: int, now: datetime
) -> Refusal | None:
    before = SignInAttempt.id < attempt_id
    if _pair_locked(db, policy, username, source, now, before):
        return Refusal.PAIR_LOCKED
    since = now - policy.window
    failed = (
        select(func.count())
        .select_from(SignInAttempt)
        .where(SignInAttempt.succeeded.is_(False), SignInAttempt.attempted_at > since, before)
    )
    by_username = db.scalar(failed.where(SignInAttempt.username == username)) or 0
    by_source = db.scalar(failed.where(SignInAttempt.source == source)) or 0
    if by_username < policy.username_max_failures and by_source < policy.source_max_failures:
        return None
    if _known_pair(db, policy, username, source, now):
        return None
    if by_username >= policy.username_max_failures:
        return Refusal.USERNAME_THROTTLED
    return Refusal.SOURCE_THROTTLED


def _pair_locked(
    db: Session,
    policy: Policy,
    username: str,
    source: str,
    now: datetime,
    *where: ColumnElement[bool],
) -> bool:
    if policy.max_failures <= 0:
        return False
    latest = list(
        db.scalars(
            select(SignInAttempt.attempted_at)
            .where(
                SignInAttempt.username == username,
                SignInAttempt.source == source,
                SignInAttempt.succeeded.is_(False),
                *where,
            )
            .order_by(SignInAttempt.id.desc())
            .limit(policy.max_failures)
        )
    )
    if len(latest) < policy.max_failures:
        return False
    newest, oldest = latest[0], latest[-1]
    return newest - oldest <= policy.window and now < newest + policy.lockout


def _known_pair(db: Session, policy: Policy, username: str, source: str, now: datetime) -> bool:
    query = select(SignInAttempt.id).where(
        SignInAttempt.username == username,
        SignInAttempt.source == source,
        SignInAttempt.succeeded.is_(True),
        SignInAttempt.attempted_at > now - policy.known_pair,
    )
    return db.scalar(query.limit(1)) is not None


def failed(factory: sessionmaker[Session], policy: Policy, username: str, source: str) -> bool:
    """The attempt's password was wrong (its row stays a failure): True when that locks the pair."""
    with factory() as db:
        return _pair_locked(db, policy, username, source, utcnow())


def succeeded(factory: sessionmaker[Session], policy: Policy, username: str, source: str) -> None:
    """Clear the pair's failures (this attempt's row too) and remember the pair as known."""
    now = utcnow()
    with transaction(factory) as db:
        pair = (SignInAttempt.username == username, SignInAttempt.source == source)
        db.execute(delete(SignInAttempt).where(*pair))
        forgotten = SignInAttempt.attempted_at < now - policy.known_pair
        db.execute(delete(SignInAttempt).where(SignInAttempt.succeeded.is_(True), forgotten))
        db.add(SignInAttempt(username=username, source=source, succeeded=True, attempted_at=now))
