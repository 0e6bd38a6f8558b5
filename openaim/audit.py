"""The audit trail: an append-only, hash-chained table of who did what to which object, and when.

Event types follow DICOM PS3.15 A.5 (Audit Trail Message Format Profile) plus the platform's AI events.
Each row stores the hash of the row before it, so ``verify`` finds any row that was altered or removed
from the middle of the trail. The database itself refuses UPDATE and DELETE on the table (see the first
migration); the chain is what catches someone who got around that.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

from sqlalchemy import Select, String, Text, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from openaim.db import Base, UTCDateTime, transaction, utcnow

GENESIS = "0" * 64
# The most one event waits for the write lock, all tries together: about one SQLite busy timeout.
APPEND_WITHIN_S = 30.0


class EventType(StrEnum):
    # DICOM PS3.15 A.5.1 (names of the DCM event ID codes)
    USER_AUTHENTICATION = "UserAuthentication"  # DCM 110114
    QUERY = "Query"  # DCM 110112
    INSTANCES_ACCESSED = "DICOMInstancesAccessed"  # DCM 110103
    INSTANCES_TRANSFERRED = "DICOMInstancesTransferred"  # DCM 110104
    EXPORT = "Export"  # DCM 110106
    SECURITY_ALERT = "SecurityAlert"  # DCM 110113
    APPLICATION_ACTIVITY = "ApplicationActivity"  # DCM 110100
    # The platform's AI events (private to openaim)
    AI_INFERENCE = "AIInference"
    AI_MODEL_CHANGED = "AIModelChanged"
    AI_FEEDBACK = "AIFeedback"
    AI_TRIAGE_CHANGED = "AITriageChanged"
    AI_ALERT = "AIAlert"
    AI_REVIEW_DECISION = "AIReviewDecision"
    AI_RESULT_SHOWN = "AIResultShown"  # a result (ours or another vendor's) put in front of a reader
    STUDY_IMPRESSION = "StudyImpression"  # a reader's overall impression, with whether the AI was visible


class Action(StrEnum):
    """PS3.15 EventActionCode."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(IntEnum):
    """PS3.15 EventOutcomeIndicator."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)  # the log page's date filter
    event_type: Mapped[str] = mapped_column(String(48), index=True)
    action: Mapped[str] = mapped_column(String(1))
    outcome: Mapped[int]
    username: Mapped[str | None] = mapped_column(String(64), index=True)
    object_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    source: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)  # unique: the chain cannot fork
    hash: Mapped[str] = mapped_column(String(64))

    def content_hash(self) -> str:
        content = [
            self.prev_hash,
            self.occurred_at.isoformat(timespec="microseconds"),
            self.event_type,
            self.action,
            int(self.outcome),
            self.username,
            self.object_uid,
            self.source,
            self.detail,
        ]
        return hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()


def record(
    factory: sessionmaker[Session],
    event_type: EventType,
    *,
    action: Action,
    outcome: Outcome = Outcome.SUCCESS,
    username: str | None = None,
    object_uid: str | None = None,
    source: str | None = None,
    detail: dict[str, Any] | None = None,
    within: float = APPEND_WITHIN_S,
) -> AuditEvent:
    """Append one event in its own transaction, so that it stays even when the caller's work fails.

    Waits at most ``within`` seconds in all for the database's write lock, then raises AuditAppendError
    (issue 14 item 6). On PostgreSQL the appenders' advisory lock used to wait without any bound: a lock
    held 20 s elsewhere delayed an append 20 s, then it went through; one never let go held every request
    for ever. On SQLite the append reads before it writes, so a held write lock fails a try at once: tries
    go on until the time is up (they used to stop after 20 quick ones, 0.3 s, and the request failed)."""
    event = dict(
        event_type=event_type.value,
        action=action.value,
        outcome=int(outcome),
        username=username,
        object_uid=object_uid,
        source=source,
        detail=json.dumps(detail or {}, sort_keys=True),
    )
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            with transaction(factory) as db, _lock_wait_at_most(db, left):
                return _append(db, AuditEvent(occurred_at=utcnow(), **event))
        except IntegrityError:
            continue  # another writer appended first: link to its row instead
        except OperationalError as error:
            if not _waited_for_lock(error):
                raise
            time.sleep(0.01)  # SQLite: a writer with an older snapshot must start again
    raise AuditAppendError(
        f"could not append a {event_type.value} event to the audit trail within {within:g} s: another "
        "connection kept the database's write lock (a transaction left open?)"
    )


class AuditAppendError(RuntimeError):
    """The audit trail could not be appended to in time: the database's write lock stayed taken."""


@contextmanager
def _lock_wait_at_most(db: Session, seconds: float) -> Iterator[None]:
    """Any lock wait of this transaction ends after ``seconds``: SQLite's busy timeout (a property of the
    connection, put back afterwards for the pool's next user), PostgreSQL's lock_timeout (this
    transaction's only)."""
    milliseconds = max(1, int(seconds * 1000))
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text(f"SET LOCAL lock_timeout = {milliseconds}"))
        yield
        return
    connection = db.connection().connection.dbapi_connection
    assert connection is not None
    before = connection.execute("PRAGMA busy_timeout").fetchone()[0]
    connection.execute(f"PRAGMA busy_timeout = {milliseconds}")
    try:
        yield
    finally:
        connection.execute(f"PRAGMA busy_timeout = {int(before)}")


def _waited_for_lock(error: OperationalError) -> bool:
    """SQLite: "database is locked"; PostgreSQL: lock_timeout ran out (SQLSTATE 55P03)."""
    return "locked" in str(error) or getattr(error.orig, "sqlstate", None) == "55P03"


def _append(db: Session, event: AuditEvent) -> AuditEvent:
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(7243001)"))  # one appender at a time
    last = db.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1))
    event.prev_hash = last or GENESIS
    event.hash = event.content_hash()
    db.add(event)
    db.flush()
    return event


@dataclass(frozen=True)
class Verification:
    rows: int
    head: str
    problems: list[str]
    first_broken_row: int | None = None  # the id of the first row whose content or link does not hold
    last_row: int = 0  # the id of the last row walked: a later check can go on from here

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(db: Session, since: Verification | None = None) -> Verification:
    """Walk the chain from the first row; report each row whose content or link does not hold.

    With ``since``, an earlier intact result, only the rows written after it are walked, linked to its
    head: seconds instead of minutes on a trail of millions (about 28,000 rows/s here). It vouches for
    the older rows only as of that earlier walk; a full walk is what finds a later change among them.
    """
    problems: list[str] = []
    first_broken: int | None = None
    expected_prev = since.head if since is not None else GENESIS
    rows = since.rows if since is not None else 0
    last_row = since.last_row if since is not None else 0
    query = select(AuditEvent).where(AuditEvent.id > last_row).order_by(AuditEvent.id)
    for event in db.scalars(query.execution_options(yield_per=1000)):
        rows += 1
        last_row = event.id
        found = len(problems)
        if event.prev_hash != expected_prev:
            problems.append(
                f"row {event.id}: does not follow the row before it (a row was deleted or altered)"
            )
        if event.content_hash() != event.hash:
            problems.append(f"row {event.id}: content was altered")
        if first_broken is None and len(problems) > found:
            first_broken = event.id
        expected_prev = event.hash
    return Verification(rows, expected_prev, problems, first_broken_row=first_broken, last_row=last_row)


@dataclass(frozen=True)
class AuditFilter:
    """Which events a reader of the trail asks for; every field is optional. Times are UTC, ``until``
    exclusive."""

    username: str | None = None
    event_type: EventType | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self, query: Select[AuditEvent]) -> Select[AuditEvent]:
        if self.username:
            query = query.where(AuditEvent.username == self.username)
        if self.event_type is not None:
            query = query.where(AuditEvent.event_type == self.event_type.value)
        if self.since is not None:
            query = query.where(AuditEvent.occurred_at >= self.since)
        if self.until is not None:
            query = query.where(AuditEvent.occurred_at < self.until)
        return query


def newest(db: Session, selection: AuditFilter, limit: int, before_id: int | None = None) -> list[AuditEvent]:
    """One page of matching events, newest first; the next page starts before the last row's id.

    Filtered and limited in SQL, paged by id rather than by offset: the trail grows to millions of rows,
    and a page deep in it costs as much as the first.
    """
    query = selection.where(select(AuditEvent))
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    return list(db.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))


def oldest_first(
    factory: sessionmaker[Session], selection: AuditFilter, batch: int = 1000
) -> Iterator[AuditEvent]:
    """Every matching event in the order written, fetched a batch at a time, each batch in its own short
    read, so that an export of the whole trail neither holds a transaction open nor the rows in memory."""
    after_id = 0
    while True:
        with factory() as db:
            query = selection.where(select(AuditEvent)).where(AuditEvent.id > after_id)
            rows = list(db.scalars(query.order_by(AuditEvent.id).limit(batch)))
        yield from rows
        if len(rows) < batch:
            return
        after_id = rows[-1].id
