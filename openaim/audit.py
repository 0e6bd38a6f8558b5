"""The audit trail: an append-only, hash-chained table of who did what to which object, and when.

Event types follow DICOM PS3.15 A.5 (Audit Trail Message Format Profile) plus the platform's AI events.
Each row stores the hash of the row before it and its own HMAC-SHA256, keyed with a secret the database
does not hold (``OPENAIM_AUDIT_KEY``): ``verify`` finds any row altered or removed from the middle of the
trail, and a trail rewritten and chained again without the key. The database itself refuses UPDATE and
DELETE on the table (see the first migration); the chain is what catches someone who got around that.
Deleting the newest rows leaves a shorter chain that holds: the head is anchored outside the database
for that (openaim/audit_anchors.py), and ``verify`` checks the anchors too.

Rows written before the chain was keyed (migration 0010 records the last of them) keep their plain
SHA-256 and still verify, as the chain's first rows only: the first keyed row covers their head.

An action and its audit row commit together: ``append`` writes the row in the action's own transaction,
after the action's work (a crash between two commits used to leave actions without their row).
``record`` appends in a transaction of its own, for events that must stay whatever the caller's work
becomes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

from sqlalchemy import Select, String, Text, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from openaim.audit_anchors import Anchor, AnchorLog
from openaim.db import AUDIT_KEY, Base, UTCDateTime, transaction, utcnow

GENESIS = "0" * 64
# The most one event waits for the write lock, all tries together: about one SQLite busy timeout.
APPEND_WITHIN_S = 30.0
APPENDERS_LOCK = 7243001  # PostgreSQL advisory lock: one appender at a time


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

    def content_hash(self, key: bytes | None) -> str:
        """HMAC-SHA256 of the row's content and link; ``None``: the plain SHA-256 of rows written before
        the chain was keyed."""
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
        message = json.dumps(content, separators=(",", ":")).encode()
        if key is None:
            return hashlib.sha256(message).hexdigest()
        return hmac.new(key, message, hashlib.sha256).hexdigest()


class AuditChain(Base):
    """What the chain needs besides its rows, in one row: where the rows from before the key end. SQLite
    appenders write it first, to hold the database's write lock before they read the chain's head."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(primary_key=True)
    unkeyed_until: Mapped[int] = mapped_column(default=0)  # the last row chained with plain SHA-256


class AuditKeyMissingError(RuntimeError):
    """Sessions that append to or verify the trail were made without its key."""


def audit_key(db: Session) -> bytes:
    key = db.info.get(AUDIT_KEY)
    if not key:
        raise AuditKeyMissingError(
            "these database sessions have no audit key: make them with "
            "openaim.db.session_factory(engine, settings.resolved_audit_key)"
        )
    return bytes(key)


def append(
    db: Session,
    event_type: EventType,
    *,
    action: Action,
    outcome: Outcome = Outcome.SUCCESS,
    username: str | None = None,
    object_uid: str | None = None,
    source: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction: it commits with the action it records, or neither
    does. Call it last in the transaction: from here to the commit the transaction holds the appenders'
    lock (SQLite's write lock, PostgreSQL's advisory lock), so that the chain's order is the rows' order.
    Waits at most APPEND_WITHIN_S for that lock, then raises AuditAppendError (and the transaction
    fails)."""
    event = _event(event_type, action, outcome, username, object_uid, source, detail)
    try:
        with _lock_wait_at_most(db, APPEND_WITHIN_S):
            return _append(db, event)
    except OperationalError as error:
        if not _waited_for_lock(error):
            raise
        raise AuditAppendError(_lock_message(event_type, APPEND_WITHIN_S)) from error


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
    """Append one event in its own transaction, so that it stays even when the caller's work fails (an
    action's own event goes through ``append``, in the action's transaction).

    Waits at most ``within`` seconds in all for the database's write lock, then raises AuditAppendError
    (issue 14 item 6). On PostgreSQL the appenders' advisory lock used to wait without any bound: a lock
    held 20 s elsewhere delayed an append 20 s, then it went through; one never let go held every request
    for ever. On SQLite a held write lock can fail a try at once: tries go on until the time is up (they
    used to stop after 20 quick ones, 0.3 s, and the request failed)."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        event = _event(event_type, action, outcome, username, object_uid, source, detail)
        try:
            with transaction(factory) as db, _lock_wait_at_most(db, left):
                return _append(db, event)
        except IntegrityError:
            continue  # another writer appended first: link to its row instead
        except OperationalError as error:
            if not _waited_for_lock(error):
                raise
            time.sleep(0.01)  # SQLite: a writer with an older snapshot must start again
    raise AuditAppendError(_lock_message(event_type, within))


def _event(
    event_type: EventType,
    action: Action,
    outcome: Outcome,
    username: str | None,
    object_uid: str | None,
    source: str | None,
    detail: dict[str, Any] | None,
) -> AuditEvent:
    return AuditEvent(
        occurred_at=utcnow(),
        event_type=event_type.value,
        action=action.value,
        outcome=int(outcome),
        username=username,
        object_uid=object_uid,
        source=source,
        detail=json.dumps(detail or {}, sort_keys=True),
    )


def _lock_message(event_type: EventType, within: float) -> str:
    return (
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
    key = audit_key(db)
    _take_appenders_lock(db)
    last = db.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1))
    event.prev_hash = last or GENESIS
    event.hash = event.content_hash(key)
    db.add(event)
    db.flush()
    return event


def _take_appenders_lock(db: Session) -> None:
    """Held until the transaction ends, so that the head read next is still the head at the commit.

    SQLite: a write first (the driver begins the transaction at the first write, and a read before it
    would see a head another writer may extend before this one's insert): it waits for the database's
    write lock, or finds this transaction holding it already (the action's own writes)."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text(f"SELECT pg_advisory_xact_lock({APPENDERS_LOCK})"))
        return
    db.execute(update(AuditChain).where(AuditChain.id == 1).values(unkeyed_until=AuditChain.unkeyed_until))


def head(db: Session) -> tuple[int, str] | None:
    """The newest row's id and hash (what an anchor pins), or None on an empty trail."""
    row = db.execute(select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).first()
    return (row.id, row.hash) if row is not None else None


@dataclass(frozen=True)
class Verification:
    rows: int
    head: str
    problems: list[str]
    first_broken_row: int | None = None  # the id of the first row whose content or link does not hold
    last_row: int = 0  # the id of the last row walked: a later check can go on from here
    unkeyed_rows: int = 0  # rows from before the chain was keyed (plain SHA-256)
    keyed_from: int | None = None  # the first row signed with the key
    anchors: int = 0  # anchors read outside the database (0: truncation of the newest rows goes unseen)
    last_anchor: Anchor | None = None  # the anchor of the newest row
    walked_from: int = 0  # the walk began after this row (0: it walked the whole chain)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(db: Session, since: Verification | None = None, anchors: AnchorLog | None = None) -> Verification:
    """Walk the chain from the first row; report each row whose content, key or link does not hold, and
    each anchor the rows do not match (the newest rows deleted, or the trail rewritten).

    With ``since``, an earlier intact result, only the rows written after it are walked, linked to its
    head: seconds instead of minutes on a trail of millions (about 28,000 rows/s here). It vouches for
    the older rows only as of that earlier walk (its last row must still be there, unchanged); a full
    walk is what finds a later change among them.
    """
    if since is not None and not _still_there(db, since):
        since = None  # rows were removed or rewritten since the earlier walk: walk them all
    walk = _Walk(audit_key(db), _unkeyed_until(db), since, anchors)
    query = select(AuditEvent).where(AuditEvent.id > walk.last_row).order_by(AuditEvent.id)
    for event in db.scalars(query.execution_options(yield_per=1000)):
        walk.step(event)
    return walk.result()


def _still_there(db: Session, since: Verification) -> bool:
    if since.last_row == 0:
        return True
    return db.scalar(select(AuditEvent.hash).where(AuditEvent.id == since.last_row)) == since.head


def _unkeyed_until(db: Session) -> int:
    return db.scalar(select(AuditChain.unkeyed_until).where(AuditChain.id == 1)) or 0


@dataclass
class _Walk:
    """One walk along the chain, row by row, with the anchors of the rows it meets."""

    key: bytes
    unkeyed_until: int
    since: Verification | None
    anchor_log: AnchorLog | None
    problems: list[str] = field(default_factory=list)
    first_broken: int | None = None
    rows: int = 0
    last_row: int = 0
    expected_prev: str = GENESIS
    unkeyed_rows: int = 0
    keyed_from: int | None = None
    keyed_ok: int = 0
    past_unkeyed: int = 0  # rows walked that must carry the key
    by_row: dict[int, list[Anchor]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        if self.since is not None:
            earlier = self.since
            self.rows, self.last_row, self.expected_prev = earlier.rows, earlier.last_row, earlier.head
            self.unkeyed_rows, self.keyed_from = earlier.unkeyed_rows, earlier.keyed_from
        self.walked_from = self.last_row
        if self.anchor_log is not None:
            self.problems.extend(self.anchor_log.problems)
            for anchor in self.anchor_log.anchors:
                self.by_row[anchor.row_id].append(anchor)

    def step(self, event: AuditEvent) -> None:
        self.rows += 1
        self.last_row = event.id
        found = len(self.problems)
        if event.prev_hash != self.expected_prev:
            self.problems.append(
                f"row {event.id}: does not follow the row before it (a row was deleted or altered)"
            )
        self._check_signature(event)
        for anchor in self.by_row.pop(event.id, []):
            if anchor.hash != event.hash:
                self.problems.append(
                    f"row {event.id}: differs from its anchor of {anchor.at:%Y-%m-%d %H:%M:%S} UTC (anchor "
                    f"file line {anchor.line}): the trail was rewritten"
                )
        if self.first_broken is None and len(self.problems) > found:
            self.first_broken = event.id
        self.expected_prev = event.hash

    def _check_signature(self, event: AuditEvent) -> None:
        self.past_unkeyed += event.id > self.unkeyed_until
        if hmac.compare_digest(event.content_hash(self.key), event.hash):
            self.keyed_ok += 1
            self.keyed_from = self.keyed_from or event.id
        elif event.content_hash(None) != event.hash:
            self.problems.append(f"row {event.id}: content was altered")
        elif self.keyed_from is not None or event.id > self.unkeyed_until:
            self.problems.append(
                f"row {event.id}: chained without the key, where the trail is keyed: rewritten by someone "
                "who does not hold the key"
            )
        else:
            self.unkeyed_rows += 1

    def result(self) -> Verification:
        self._check_remaining_anchors()
        if self.past_unkeyed and not self.keyed_ok:
            self.problems.append(
                "no row verifies with this key: is it the key the trail was written with "
                "(OPENAIM_AUDIT_KEY, or audit-key in the data directory)?"
            )
        anchors = self.anchor_log.anchors if self.anchor_log is not None else []
        return Verification(
            self.rows,
            self.expected_prev,
            self.problems,
            first_broken_row=self.first_broken,
            last_row=self.last_row,
            unkeyed_rows=self.unkeyed_rows,
            keyed_from=self.keyed_from,
            anchors=len(anchors),
            last_anchor=max(anchors, key=lambda anchor: anchor.row_id, default=None),
            walked_from=self.walked_from,
        )

    def _check_remaining_anchors(self) -> None:
        """Anchors of rows the walk did not meet: past the trail's end (truncated), or missing from it."""
        for row_id, anchors in sorted(self.by_row.items()):
            for anchor in anchors:
                when = f"{anchor.at:%Y-%m-%d %H:%M:%S} UTC (anchor file line {anchor.line})"
                if row_id > self.last_row:
                    self.problems.append(
                        f"the trail ends at row {self.last_row}, but row {row_id} was anchored on {when}: "
                        "the newest rows were deleted"
                    )
                elif row_id > self.walked_from:
                    self.problems.append(f"row {row_id}, anchored on {when}, is missing")


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
