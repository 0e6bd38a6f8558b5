"""The audit-log page against the real app and database: filters by user, event and date, pages newest
first, exports the selection as a streamed CSV (formula cells defused), says whether the hash chain
verifies or where it breaks, and is itself audited."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from openaim import audit
from openaim.audit import Action, AuditEvent, EventType
from openaim.audit_anchoring import anchor_file, anchor_now
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.conftest import BASE_URL, sign_in
from viewer.admin import audit_log
from viewer.app import create_app

HTML = {"Accept": "text/html"}


def _write(db: sessionmaker[Session], when: datetime, kind: EventType, username: str, **detail: str) -> None:
    """An event stamped ``when`` (``audit.record`` stamps the present), appended to the chain."""
    with db() as session, session.begin():
        event = AuditEvent(
            occurred_at=when,
            event_type=kind.value,
            action=Action.EXECUTE.value,
            outcome=0,
            username=username,
            detail=audit.json.dumps(detail, sort_keys=True),
        )
        audit._append(session, event)


def _rows(html: str) -> list[int]:
    return [int(row) for row in re.findall(r'<tr data-row="(\d+)"', html)]


def _ids(db: sessionmaker[Session], **where: str) -> list[int]:
    with db() as session:
        query = select(AuditEvent.id).filter_by(**where).order_by(AuditEvent.id)
        return list(session.scalars(query))


def test_the_page_filters_by_user_event_and_date_newest_first(
    admin: TestClient, db: sessionmaker[Session]
) -> None:
    march = datetime(2026, 3, 1, 12, tzinfo=UTC)
    for day in range(10):
        _write(db, march + timedelta(days=day), EventType.QUERY, "alice" if day % 2 else "bob")
        _write(db, march + timedelta(days=day), EventType.EXPORT, "alice")
    page = admin.get(
        "/admin/audit",
        params={"user": "alice", "event": "Query", "since": "2026-03-03", "until": "2026-03-08"},
        headers=HTML,
    )
    assert page.status_code == 200
    with db() as session:
        wanted = session.scalars(
            select(AuditEvent.id)
            .where(AuditEvent.username == "alice", AuditEvent.event_type == "Query")
            .where(AuditEvent.occurred_at >= datetime(2026, 3, 3, tzinfo=UTC))
            .where(AuditEvent.occurred_at < datetime(2026, 3, 9, tzinfo=UTC))
            .order_by(AuditEvent.id.desc())
        ).all()
    assert _rows(page.text) == list(wanted) and len(wanted) == 3  # the 4th, 6th and 8th of March
    assert 'value="alice"' in page.text and '<option value="Query" selected>' in page.text


def test_the_page_pages_by_row_and_is_itself_audited(
    admin: TestClient, db: sessionmaker[Session], monkeypatch
) -> None:
    monkeypatch.setattr(audit_log, "PAGE_ROWS", 4)
    for number in range(9):
        _write(db, datetime.now(UTC), EventType.AI_FEEDBACK, "reader", number=str(number))
    feedback = _ids(db, event_type="AIFeedback")
    first = admin.get("/admin/audit", params={"event": "AIFeedback"}, headers=HTML)
    assert _rows(first.text) == feedback[::-1][:4]
    older = re.search(r'href="/admin/audit\?([^"]+)" data-testid="older"', first.text)
    assert older is not None and "event=AIFeedback" in older.group(1)
    second = admin.get(f"/admin/audit?{older.group(1).replace('&amp;', '&')}", headers=HTML)
    assert _rows(second.text) == feedback[::-1][4:8]
    with db() as session:
        looks = session.scalars(select(AuditEvent.detail).where(AuditEvent.event_type == "Query")).all()
    assert [detail for detail in looks if "AuditLog" in detail] == [  # each look at the trail is in it
        '{"event": "AIFeedback", "subtype": "AuditLog"}'
    ] * 2


def test_bad_filters_are_422(admin: TestClient) -> None:
    assert admin.get("/admin/audit", params={"event": "Nonsense"}).status_code == 422
    assert admin.get("/admin/audit", params={"since": "03/01/2026"}).status_code == 422
    assert admin.get("/admin/audit.csv", params={"until": "x"}).status_code == 422


def test_events_are_escaped(admin: TestClient, db: sessionmaker[Session]) -> None:
    _write(db, datetime.now(UTC), EventType.USER_AUTHENTICATION, "<script>alert(1)</script>", note="<b>x</b>")
    page = admin.get("/admin/audit", headers=HTML).text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>x</b>" not in page


def test_the_csv_export_streams_the_selection_oldest_first_and_defuses_formulas(
    admin: TestClient, db: sessionmaker[Session]
) -> None:
    for number in range(1203):  # more than two of the export's batches
        name = '=HYPERLINK("x")' if number == 5 else "bob"
        _write(db, datetime.now(UTC), EventType.AI_TRIAGE_CHANGED, name)
    _write(db, datetime.now(UTC), EventType.EXPORT, "bob")
    response = admin.get("/admin/audit.csv", params={"event": "AITriageChanged"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="openaim-audit-')
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(row["id"]) for row in rows] == _ids(db, event_type="AITriageChanged")
    assert len(rows) == 1203
    assert rows[5]["username"] == '\'=HYPERLINK("x")'
    assert rows[1]["prev_hash"] == rows[0]["hash"]  # the chain can be followed in the file
    exports = _ids(db, event_type="Export")
    assert len(exports) == 2  # the one written above and the export just made


def test_the_chain_shows_verified_or_where_it_broke(admin: TestClient, db: sessionmaker[Session]) -> None:
    for number in range(3):
        _write(db, datetime.now(UTC), EventType.QUERY, "bob", number=str(number))
    page = admin.get("/admin/audit", headers=HTML).text
    assert 'hx-get="/admin/audit/verification"' in page
    fragment = admin.get("/admin/audit/verification", headers={"HX-Request": "true"}).text
    assert 'data-verified="true"' in fragment and "Hash chain verified" in fragment
    assert "<html" not in fragment
    with db() as session, session.begin():  # what someone with the database owner's rights could do
        session.execute(text("DROP TRIGGER audit_events_no_update"))
        session.execute(text("UPDATE audit_events SET username = 'mallory' WHERE id = 2"))
    _write(db, datetime.now(UTC), EventType.QUERY, "bob")
    # Within the hour only the new rows are walked, and the page says when the full walk was.
    again = admin.get("/admin/audit/verification", headers={"HX-Request": "true"}).text
    assert 'data-verified="true"' in again and "Walked from the first row at" in again
    full = admin.get("/admin/audit/verification", params={"full": "true"}, headers=HTML).text
    assert "<html" in full and 'data-verified="false"' in full
    assert "Hash chain broken at row 2" in full and "row 2: content was altered" in full
    later = admin.get("/admin/audit/verification", headers={"HX-Request": "true"}).text
    assert 'data-verified="false"' in later  # a broken chain is walked in full every time


def test_a_new_row_after_a_full_walk_is_checked_on_the_next_visit(
    admin: TestClient, db: sessionmaker[Session]
) -> None:
    assert 'data-verified="true"' in admin.get("/admin/audit/verification").text
    with db() as session, session.begin():  # a forged row that does not link to the chain's head
        session.execute(
            text(
                "INSERT INTO audit_events (occurred_at, event_type, action, outcome, detail, prev_hash, hash)"
                " VALUES ('2026-01-01 00:00:00.000000', 'Query', 'E', 0, '{}', :prev, :hash)"
            ),
            {"prev": "f" * 64, "hash": "e" * 64},
        )
    visit = admin.get("/admin/audit/verification").text
    assert 'data-verified="false"' in visit and "does not follow the row before it" in visit


def test_the_page_sees_the_newest_rows_deleted_by_their_anchor(
    admin: TestClient, db: sessionmaker[Session], settings: Settings
) -> None:
    """Issue 15 item 7: a trail cut short is still a chain that holds; its anchor outside the database
    is what tells, on the page as in ``openaim audit verify``."""
    for number in range(3):
        _write(db, datetime.now(UTC), EventType.QUERY, "bob", number=str(number))
    anchor_now(settings, db)
    fragment = admin.get("/admin/audit/verification", headers={"HX-Request": "true"}).text
    assert 'data-verified="true"' in fragment and "Head anchored outside the database up to row" in fragment
    with db() as session, session.begin():
        newest = session.scalar(select(func.max(AuditEvent.id)))
        session.execute(text("DROP TRIGGER audit_events_no_delete"))
        session.execute(text("DELETE FROM audit_events WHERE id >= :newest - 1"), {"newest": newest})
    visit = admin.get("/admin/audit/verification", headers={"HX-Request": "true"}).text
    assert 'data-verified="false"' in visit and "Audit trail failed verification" in visit
    assert f"but row {newest} was anchored on" in visit and "the newest rows were deleted" in visit


def test_the_app_anchors_the_head_when_it_stops(
    settings: Settings, db: sessionmaker[Session], orthanc: OrthancConnection
) -> None:
    with TestClient(create_app(settings, orthanc), base_url=BASE_URL) as client:
        sign_in(client, "admin")  # audited
    [*_, last] = anchor_file(settings).read().anchors
    with db() as session:
        assert (last.row_id, last.hash) == audit.head(session)


def test_governance_reads_and_exports_the_trail_under_its_own_name(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    governance = sign_in(client, "governance")
    _write(db, datetime.now(UTC), EventType.AI_FEEDBACK, "reader", number="1")
    page = governance.get("/admin/audit", params={"event": "AIFeedback"}, headers=HTML)
    assert page.status_code == 200 and len(_rows(page.text)) == 1
    export = governance.get("/admin/audit.csv", params={"event": "AIFeedback"})
    assert export.status_code == 200 and len(list(csv.DictReader(io.StringIO(export.text)))) == 1
    with db() as session:
        looked = select(AuditEvent.username).where(AuditEvent.event_type.in_(["Query", "Export"]))
        assert set(session.scalars(looked)) == {"governance"}  # its looks are in the trail, under its name
