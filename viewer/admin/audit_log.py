"""The audit-log page for admins: the trail newest first, filtered by user, event and date, a page at
a time; the same selection as a CSV file; and whether the hash chain verifies.

The trail grows to millions of rows, so the page filters and limits in SQL and pages by row id, and the
CSV is streamed a batch at a time. The chain is checked in a separate request the page loads after it
has shown: walking every row takes about 35 s a million rows here, so a full walk runs on the first
visit, at most hourly after, and when the admin asks; other visits walk only the rows written since,
from the last intact result, and the page says when the last full walk was. Reading and exporting the
trail are themselves audited.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from openaim import audit, audit_anchoring
from openaim.audit import AuditEvent, AuditFilter, EventType
from openaim.audit_anchors import AnchorFile
from viewer.access.deps import Audit, DbSession, Monitor
from viewer.row_ids import OptionalRowIdQuery
from viewer.templates import render

router = APIRouter()

PAGE_ROWS = 100
FULL_CHECK_EVERY = timedelta(hours=1)
CSV_COLUMNS = (
    "id",
    "occurred_at",
    "event_type",
    "action",
    "outcome",
    "username",
    "object_uid",
    "source",
    "detail",
    "prev_hash",
    "hash",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula

UserQuery = Annotated[str, Query(max_length=64)]
EventQuery = Annotated[str, Query(max_length=48)]
DateQuery = Annotated[str, Query(max_length=10)]


@dataclass(frozen=True)
class Filters:
    """The form's values as given (for the form and the links) and the selection they make."""

    user: str
    event: str
    since: str
    until: str
    selection: AuditFilter

    def query_string(self, **extra: Any) -> str:
        values = {"user": self.user, "event": self.event, "since": self.since, "until": self.until}
        return urlencode({key: value for key, value in {**values, **extra}.items() if value})


def _day(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise HTTPException(422, f"{name}: a date is written YYYY-MM-DD") from error


def _filters(user: str, event: str, since: str, until: str) -> Filters:
    try:
        event_type = EventType(event) if event else None
    except ValueError as error:
        raise HTTPException(422, "event: not an event type of the audit trail") from error
    first, last = _day(since, "since"), _day(until, "until")
    selection = AuditFilter(
        username=user or None,
        event_type=event_type,
        since=datetime.combine(first, time(), UTC) if first else None,
        # ``until`` names the last day shown, whole: the selection ends at the next midnight (UTC).
        until=datetime.combine(last + timedelta(days=1), time(), UTC) if last else None,
    )
    return Filters(user, event, since, until, selection)


@dataclass(frozen=True)
class EventRow:
    id: int
    occurred_at: datetime
    event_type: str
    action: str
    outcome: int
    username: str
    object_uid: str
    source: str
    detail: list[tuple[str, str]]

    @classmethod
    def of(cls, event: AuditEvent) -> EventRow:
        return cls(
            id=event.id,
            occurred_at=event.occurred_at,
            event_type=event.event_type,
            action=event.action,
            outcome=event.outcome,
            username=event.username or "",
            object_uid=event.object_uid or "",
            source=event.source or "",
            detail=_detail(event.detail),
        )


def _detail(text: str) -> list[tuple[str, str]]:
    try:
        parsed = json.loads(text)
    except ValueError:
        return [("", text)]
    if not isinstance(parsed, dict):
        return [("", text)]
    return [(str(key), v if isinstance(v, str) else json.dumps(v)) for key, v in parsed.items()]


@router.get("/admin/audit")
def audit_log_page(
    request: Request,
    _: Monitor,
    db: DbSession,
    trail: Audit,
    user: UserQuery = "",
    event: EventQuery = "",
    since: DateQuery = "",
    until: DateQuery = "",
    before: OptionalRowIdQuery = None,
) -> Response:
    filters = _filters(user, event, since, until)
    rows = audit.newest(db, filters.selection, PAGE_ROWS + 1, before_id=before)
    older = filters.query_string(before=rows[PAGE_ROWS - 1].id) if len(rows) > PAGE_ROWS else None
    trail.record(audit.EventType.QUERY, action=audit.Action.EXECUTE, detail=_audited_filters(filters))
    return render(
        request,
        "admin/audit_log.html",
        filters=filters,
        events=[EventRow.of(row) for row in rows[:PAGE_ROWS]],
        event_types=[kind.value for kind in EventType],
        paged=before is not None,
        newest_link=filters.query_string(),
        older_link=older,
        csv_link=filters.query_string(),
    )


@dataclass(frozen=True)
class ChainCheck:
    result: audit.Verification
    full_walk_at: datetime  # when the chain was last walked from its first row


class ChainChecks:
    """The app's latest chain check. One check at a time: a visitor arriving during a long walk waits
    for it and then only walks the rows written since, instead of starting a second full walk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: ChainCheck | None = None

    def check(self, db: Session, anchors: AnchorFile, full: bool) -> ChainCheck:
        with self._lock:
            last, now = self._last, datetime.now(UTC)
            log = anchors.read()
            if full or last is None or not last.result.ok or now - last.full_walk_at > FULL_CHECK_EVERY:
                self._last = ChainCheck(audit.verify(db, anchors=log), now)
            else:
                result = audit.verify(db, since=last.result, anchors=log)
                # the rows an earlier walk vouched for had changed since: this one walked them all
                self._last = ChainCheck(result, now if result.walked_from == 0 else last.full_walk_at)
            return self._last


@router.get("/admin/audit/verification")
def chain_verification(
    request: Request, _: Monitor, db: DbSession, full: Annotated[bool, Query()] = False
) -> Response:
    """The chain: verified with its row count and head, or broken at the first bad row."""
    checks: ChainChecks | None = getattr(request.app.state, "audit_chain_checks", None)
    if checks is None:
        checks = request.app.state.audit_chain_checks = ChainChecks()
    check = checks.check(db, audit_anchoring.anchor_file(request.app.state.settings), full)
    page = "admin/audit_chain.html" if request.headers.get("HX-Request") else "admin/audit_verification.html"
    return render(request, page, result=check.result, full_walk_at=check.full_walk_at)


@router.get("/admin/audit.csv")
def audit_log_csv(
    request: Request,
    _: Monitor,
    trail: Audit,
    user: UserQuery = "",
    event: EventQuery = "",
    since: DateQuery = "",
    until: DateQuery = "",
) -> Response:
    """Every event the filters select, oldest first (the chain's order, with both hashes, so the file can
    be checked on its own), streamed as it is read."""
    filters = _filters(user, event, since, until)
    trail.record(audit.EventType.EXPORT, action=audit.Action.READ, detail=_audited_filters(filters))
    factory: sessionmaker[Session] = request.app.state.db
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        _csv_lines(audit.oldest_first(factory, filters.selection)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="openaim-audit-{stamp}.csv"'},
    )


def _audited_filters(filters: Filters) -> dict[str, str]:
    given = {"user": filters.user, "event": filters.event, "since": filters.since, "until": filters.until}
    return {"subtype": "AuditLog", **{name: value for name, value in given.items() if value}}


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_lines(events: Iterator[AuditEvent]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for count, event in enumerate(events, start=1):
        writer.writerow(
            [
                event.id,
                event.occurred_at.isoformat(timespec="microseconds"),
                event.event_type,
                event.action,
                event.outcome,
                *(_cell(value) for value in (event.username, event.object_uid, event.source)),
                _cell(event.detail),
                event.prev_hash,
                event.hash,
            ]
        )
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
