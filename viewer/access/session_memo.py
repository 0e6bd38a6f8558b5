"""Sessions found live a moment ago, for the routes a viewport calls hundreds of times a second.

Checking a session costs a database query and, because the database driver blocks, a hop to a worker
thread and back: about a third of what the viewer spends serving a cached CT frame. The viewport asks for
200 frames of a series within a second, all with the same cookie, so the answer to "is this session live,
and whose is it" is kept for a few seconds (``Settings.session_recheck_s``).

What that costs: a session ended elsewhere (signed out, its user disabled or given other roles, an
expiry, the idle timeout) still reads pixels for at most that long. Pixel requests answered from the memo
are not noted as use of the session; the one that asks the database again is (sessions.py). Changes
made through this process (sign-out, the admin's Users pages, a password change) forget at once;
``openaim user`` in another process waits out the delay. Only read-only pixel routes take the memo;
everything that writes or shows patient details checks the database on every request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from openaim.db import utcnow
from viewer.access.sessions import find_session, token_hash_of
from viewer.access.users import Role

ENTRIES_KEPT = 10_000  # far more sessions than a hospital has readers at once; bounds memory


@dataclass(frozen=True)
class SignedIn:
    """Who a session belongs to, detached from any database session."""

    user_id: int
    username: str
    display_name: str
    roles: frozenset[Role]
    must_change_password: bool
    expires_at: datetime
    csrf_token: str

    def has_any_role(self, *roles: Role) -> bool:
        return bool(self.roles & set(roles))


def look_up(
    factory: sessionmaker[Session], token: str, idle: timedelta | None = None, *, touch: bool = True
) -> SignedIn | None:
    """The live session for ``token`` from the database (blocking: call it from a worker thread)."""
    with factory() as db:
        row = find_session(db, token, idle, touch=touch)
        if row is None:
            return None
        user = row.user
        found = SignedIn(
            user.id,
            user.username,
            user.display_name,
            frozenset(user.roles),
            user.must_change_password,
            row.expires_at,
            row.csrf_token,
        )
        if db.dirty:  # find_session noted this use (at most once a minute)
            db.commit()
        return found


class SessionMemo:
    """Live sessions by token hash, each trusted for ``seconds`` after the database last said so."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, SignedIn]] = OrderedDict()

    def get(self, token: str) -> SignedIn | None:
        key = token_hash_of(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        checked_at, signed_in = entry
        if self._clock() - checked_at > self.seconds or signed_in.expires_at <= utcnow():
            del self._entries[key]
            return None
        return signed_in

    def put(self, token: str, signed_in: SignedIn) -> None:
        if self.seconds <= 0:
            return
        key = token_hash_of(token)
        self._entries[key] = (self._clock(), signed_in)
        self._entries.move_to_end(key)
        while len(self._entries) > ENTRIES_KEPT:
            self._entries.popitem(last=False)

    def forget(self, token: str) -> None:
        self._entries.pop(token_hash_of(token), None)

    def forget_all(self) -> None:
        """After a change to accounts: whose sessions it touched is not worth working out."""
        self._entries.clear()
