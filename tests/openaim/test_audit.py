"""The audit trail is append-only and hash-chained: `verify` finds any altered or deleted row.

(Rows rewritten without the key, the newest rows deleted, and anchors: test_audit_tampering.py.)"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from openaim import audit
from openaim.audit import Action, EventType, Outcome
from openaim.cli import app as cli
from openaim.db import make_engine, session_factory, upgrade
from tests.conftest import AUDIT_KEY


@pytest.fixture
def trail(database_url: str):
    upgrade(database_url)
    engine = make_engine(database_url)
    factory = session_factory(engine, AUDIT_KEY)
    for number in range(5):
        audit.record(
            factory,
            EventType.INSTANCES_ACCESSED,
            action=Action.READ,
            username="radiologist",
            object_uid=f"1.2.3.{number}",
            detail={"number": number},
        )
    yield factory
    engine.dispose()


def _disable_append_only(factory) -> None:
    """What an attacker with the database's owner rights could do first."""
    with factory() as db, db.begin():
        if db.get_bind().dialect.name == "postgresql":
            db.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        else:
            db.execute(text("DROP TRIGGER audit_events_no_update"))
            db.execute(text("DROP TRIGGER audit_events_no_delete"))


def test_an_intact_trail_verifies(trail) -> None:
    with trail() as db:
        result = audit.verify(db)
    assert result.ok and result.rows == 5
    assert result.problems == []


def test_rows_carry_the_ps3_15_vocabulary_and_link_to_the_row_before(trail) -> None:
    with trail() as db:
        rows = list(db.scalars(audit.select(audit.AuditEvent).order_by(audit.AuditEvent.id)))
    assert rows[0].prev_hash == audit.GENESIS
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(rows))
    assert {(row.event_type, row.action, row.outcome) for row in rows} == {
        ("DICOMInstancesAccessed", "R", Outcome.SUCCESS)
    }


def test_the_database_refuses_updates_and_deletes(trail) -> None:
    for statement in ("UPDATE audit_events SET username = 'someone'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), trail() as db, db.begin():
            db.execute(text(statement))
    with trail() as db:
        assert audit.verify(db).ok


def test_verify_finds_an_altered_row(trail) -> None:
    _disable_append_only(trail)
    with trail() as db, db.begin():
        db.execute(text("UPDATE audit_events SET username = 'someone-else' WHERE id = 3"))
    with trail() as db:
        result = audit.verify(db)
    assert result.problems == ["row 3: content was altered"]


def test_verify_finds_a_deleted_row(trail) -> None:
    _disable_append_only(trail)
    with trail() as db, db.begin():
        db.execute(text("DELETE FROM audit_events WHERE id = 2"))
    with trail() as db:
        result = audit.verify(db)
    assert result.problems == ["row 3: does not follow the row before it (a row was deleted or altered)"]


def test_verify_command_exits_1_on_a_tampered_trail(
    trail, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("OPENAIM_DATABASE_URL", database_url)
    monkeypatch.setenv("OPENAIM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OPENAIM_AUDIT_KEY", AUDIT_KEY.decode())
    assert CliRunner().invoke(cli, ["audit", "verify"]).exit_code == 0
    _disable_append_only(trail)
    with trail() as db, db.begin():
        db.execute(text("UPDATE audit_events SET detail = '{}' WHERE id = 4"))
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1
    assert "row 4: content was altered" in result.output


def test_verify_names_the_first_broken_row(trail) -> None:
    _disable_append_only(trail)
    with trail() as db, db.begin():
        db.execute(text("UPDATE audit_events SET detail = '{}' WHERE id IN (2, 4)"))
    with trail() as db:
        result = audit.verify(db)
    assert result.first_broken_row == 2
    with trail() as db, db.begin():
        db.execute(text("DELETE FROM audit_events"))
    with trail() as db:
        assert audit.verify(db).first_broken_row is None


def test_verify_goes_on_from_an_earlier_result(trail) -> None:
    with trail() as db:
        earlier = audit.verify(db)
    assert earlier.last_row == 5
    for number in range(2):
        audit.record(trail, EventType.QUERY, action=Action.EXECUTE, detail={"later": number})
    with trail() as db:
        later = audit.verify(db, since=earlier)
        assert later.ok and later.rows == 7 and later.last_row == 7
        assert later.head == audit.verify(db).head
    _disable_append_only(trail)
    with trail() as db, db.begin():  # an old row changed after the earlier walk
        db.execute(text("UPDATE audit_events SET detail = '{}' WHERE id = 2"))
        db.execute(text("UPDATE audit_events SET detail = '{}' WHERE id = 7"))
    with trail() as db:
        assert audit.verify(db, since=later).ok  # nothing new: the earlier walk vouches for the rest
        assert audit.verify(db, since=earlier).problems == ["row 7: content was altered"]
        assert audit.verify(db).first_broken_row == 2


def _at(factory, when: datetime, event_type: EventType, username: str) -> None:
    """An event as if written at ``when`` (record() stamps the present)."""
    with factory() as db, db.begin():
        audit._append(
            db,
            audit.AuditEvent(
                occurred_at=when,
                event_type=event_type.value,
                action="E",
                outcome=0,
                username=username,
                detail="{}",
            ),
        )


def test_newest_filters_in_sql_pages_by_id_and_oldest_first_streams_batches(factory) -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC)
    for number in range(30):
        kind = EventType.QUERY if number % 3 else EventType.USER_AUTHENTICATION
        _at(factory, day + timedelta(hours=number * 6), kind, f"user{number % 2}")
    selection = audit.AuditFilter(
        username="user0",
        event_type=EventType.QUERY,
        since=day + timedelta(days=1),
        until=day + timedelta(days=5),
    )
    with factory() as db:
        first = audit.newest(db, selection, limit=3)
        second = audit.newest(db, selection, limit=3, before_id=first[-1].id)
        everything = audit.newest(db, selection, limit=100)
    expected = [
        number + 1
        for number in range(30)
        if number % 2 == 0 and number % 3 and 4 <= number < 20  # days 1..4, hours in 6s
    ]
    assert [row.id for row in everything] == expected[::-1]
    assert [row.id for row in first + second] == expected[::-1][:6]
    assert [row.id for row in audit.oldest_first(factory, selection, batch=2)] == expected
    assert len(list(audit.oldest_first(factory, audit.AuditFilter(), batch=7))) == 30
