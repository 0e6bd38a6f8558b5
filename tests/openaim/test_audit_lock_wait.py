"""An audit append waits a bounded time for the database's write lock, then fails with a clear error
(issue 14 item 6: tests/viewer/review/test_review.py::test_queue_filters once took 300 s, then passed).

Every request appends its audit events through ``audit.record`` after its own transaction. On PostgreSQL
the appenders' advisory lock had no bound: an append waited as long as another connection held it (20 s
held, 20 s waited, then the request went through), for ever if it was never let go. On SQLite a held
lock failed the append after 20 quick tries (0.3 s). Here another connection holds the lock, on both."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from openaim import audit
from openaim.audit import Action, AuditAppendError, EventType

APPENDERS_LOCK = 7243001  # openaim/audit.py: one appender at a time on PostgreSQL


@contextmanager
def write_lock_held(database_url: str) -> Iterator[threading.Event]:
    """Another connection takes the lock audit appends need, until the yielded event is set."""
    release, taken = threading.Event(), threading.Event()

    def hold() -> None:
        if database_url.startswith("sqlite"):
            connection = sqlite3.connect(make_url(database_url).database or "", isolation_level=None)
            connection.execute("BEGIN IMMEDIATE")  # SQLite's write lock
            taken.set()
            release.wait(60)
            connection.execute("ROLLBACK")
            connection.close()
            return
        engine = create_engine(database_url)
        with engine.connect() as connection:
            connection.execute(text(f"SELECT pg_advisory_lock({APPENDERS_LOCK})"))
            taken.set()
            release.wait(60)
            connection.execute(text(f"SELECT pg_advisory_unlock({APPENDERS_LOCK})"))
        engine.dispose()

    holder = threading.Thread(target=hold, name="lock-holder")
    holder.start()
    assert taken.wait(10), "the other connection did not get the lock"
    try:
        yield release
    finally:
        release.set()
        holder.join(10)


def _record(factory: sessionmaker[Session], within: float) -> audit.AuditEvent:
    return audit.record(
        factory, EventType.QUERY, action=Action.EXECUTE, detail={"scope": "lock test"}, within=within
    )


def test_a_held_lock_fails_the_append_in_its_time_with_a_clear_error(
    factory: sessionmaker[Session], database_url: str
) -> None:
    with write_lock_held(database_url):
        start = time.monotonic()
        with pytest.raises(
            AuditAppendError, match="within 1 s: another connection kept the database's write lock"
        ):
            _record(factory, within=1.0)
        assert time.monotonic() - start < 5  # not 20 tries of a 30 s busy timeout, nor forever
    assert _record(factory, within=5.0).id  # the lock let go: appends work again


def test_a_lock_let_go_in_time_only_delays_the_append(
    factory: sessionmaker[Session], database_url: str
) -> None:
    with write_lock_held(database_url) as release:
        threading.Timer(0.5, release.set).start()
        start = time.monotonic()
        event = _record(factory, within=10.0)
        waited = time.monotonic() - start
    assert event.id and 0.3 < waited < 5
    with factory() as db:
        assert audit.verify(db).ok


def test_the_pooled_connection_keeps_its_own_busy_timeout(
    factory: sessionmaker[Session], database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's lock_timeout is SET LOCAL: it ends with the transaction by itself")
    with write_lock_held(database_url), pytest.raises(AuditAppendError):
        _record(factory, within=0.2)
    with factory() as db:
        assert db.execute(text("PRAGMA busy_timeout")).scalar() == 30000  # as openaim/db.py sets it
