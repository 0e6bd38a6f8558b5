"""The trail cannot be cut short or rewritten unseen (issue 15 item 7): its chain is keyed, so rows
chained again without the key are found, and its head is anchored outside the database, so deleting the
newest rows is found by ``openaim audit verify`` too; an anchor file edited to hide that is found as well.

The attacker here holds the database's owner rights (the append-only triggers dropped) but not the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from openaim import audit
from openaim.audit import Action, EventType
from openaim.audit_anchoring import Anchorer
from openaim.audit_anchors import AnchorFile
from openaim.cli import app as cli
from openaim.db import alembic_config, make_engine, session_factory
from tests.conftest import AUDIT_KEY


@pytest.fixture
def anchors(tmp_path: Path) -> AnchorFile:
    return AnchorFile(tmp_path / "data" / "audit-anchors.log", AUDIT_KEY)


@pytest.fixture
def trail(factory: sessionmaker[Session], anchors: AnchorFile) -> sessionmaker[Session]:
    """Five events, the head (row 5) anchored."""
    _append(factory, 5)
    assert Anchorer(factory, anchors, every_seconds=60, every_rows=1000).anchor() is not None
    return factory


@pytest.fixture
def verify_command(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("OPENAIM_DATABASE_URL", database_url)
    monkeypatch.setenv("OPENAIM_DATA_DIR", str(tmp_path / "data"))  # where the anchors fixture writes
    monkeypatch.setenv("OPENAIM_AUDIT_KEY", AUDIT_KEY.decode())
    return CliRunner()


def _append(factory: sessionmaker[Session], count: int) -> None:
    for number in range(count):
        audit.record(
            factory, EventType.QUERY, action=Action.EXECUTE, username="someone", detail={"n": number}
        )


def _drop_append_only(factory: sessionmaker[Session]) -> None:
    with factory() as db, db.begin():
        if db.get_bind().dialect.name == "postgresql":
            db.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        else:
            db.execute(text("DROP TRIGGER audit_events_no_update"))
            db.execute(text("DROP TRIGGER audit_events_no_delete"))


CONTENT = (
    "prev_hash",
    "occurred_at",
    "event_type",
    "action",
    "outcome",
    "username",
    "object_uid",
    "source",
    "detail",
)


def _unkeyed_hash(row: dict[str, object]) -> str:
    """What someone without the key can compute: the chain's plain SHA-256 (as before it was keyed)."""
    content = [row[name] for name in CONTENT]
    return hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()


def _rechain_without_the_key(
    factory: sessionmaker[Session], from_id: int, to_id: int | None = None, **changes: object
) -> None:
    """Change row ``from_id`` and chain it and the rows after it (to ``to_id``) again, as the attacker
    can; the row after ``to_id`` is linked to the new head (its MAC, the attacker cannot redo)."""
    with factory() as db, db.begin():
        previous = audit.GENESIS
        for row in db.scalars(select(audit.AuditEvent).order_by(audit.AuditEvent.id)):
            if row.id == from_id:
                for name, value in changes.items():
                    setattr(row, name, value)
            if from_id <= row.id <= (to_id or row.id):
                fields = {name: getattr(row, name) for name in CONTENT}
                fields.update(
                    prev_hash=previous, occurred_at=row.occurred_at.isoformat(timespec="microseconds")
                )
                row.prev_hash, row.hash = previous, _unkeyed_hash(fields)
            elif to_id is not None and row.id == to_id + 1:
                row.prev_hash = previous
            db.flush()
            previous = row.hash


def test_deleting_the_newest_rows_fails_audit_verify(trail, verify_command: CliRunner) -> None:
    assert verify_command.invoke(cli, ["audit", "verify"]).exit_code == 0
    _drop_append_only(trail)
    with trail() as db, db.begin():
        db.execute(text("DELETE FROM audit_events WHERE id > 3"))
    with trail() as db:
        assert audit.verify(db).ok  # the shorter chain holds by itself: only the anchor tells
    result = verify_command.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1
    assert "the trail ends at row 3, but row 5 was anchored on" in result.output
    assert "the newest rows were deleted" in result.output


def test_rows_deleted_and_new_ones_written_in_their_place_differ_from_the_anchor(
    trail, anchors: AnchorFile
) -> None:
    _drop_append_only(trail)
    with trail() as db, db.begin():
        db.execute(text("DELETE FROM audit_events WHERE id > 3"))
    _append(trail, 2)  # two rows in their place, properly chained and keyed (by the platform itself)
    with trail() as db:
        result = audit.verify(db, anchors=anchors.read())
    [problem] = result.problems  # SQLite gives row 5's id again, PostgreSQL's sequence does not
    assert problem.startswith("row 5") and ("the trail was rewritten" in problem or "is missing" in problem)


def test_a_row_rewritten_and_chained_again_without_the_key_is_found(trail, verify_command: CliRunner) -> None:
    _drop_append_only(trail)
    _rechain_without_the_key(trail, 3, username="someone-else")
    with trail() as db:
        result = audit.verify(db)  # the links hold: only the key tells
    assert result.first_broken_row == 3
    assert [problem.split(":")[0] for problem in result.problems] == ["row 3", "row 4", "row 5"]
    assert "chained without the key" in result.problems[0]
    outcome = verify_command.invoke(cli, ["audit", "verify"])
    assert outcome.exit_code == 1
    assert "row 3: chained without the key" in outcome.output
    assert "row 5: differs from its anchor" in outcome.output


def test_a_trail_chained_again_from_its_first_row_without_the_key_is_found(trail) -> None:
    _drop_append_only(trail)
    _rechain_without_the_key(trail, 1, detail="{}")
    with trail() as db:
        result = audit.verify(db)
    assert result.first_broken_row == 1  # the trail was keyed from its first row (migration 0010)
    assert len(result.problems) == 6 and "no row verifies with this key" in result.problems[-1]


def test_a_row_signed_with_another_key_is_found(trail) -> None:
    other = session_factory(trail.kw["bind"], b"not the platform's key, but as long as it" * 2)
    _append(other, 1)
    with trail() as db:
        assert audit.verify(db).problems == ["row 6: content was altered"]


def test_an_edited_anchor_file_is_found(trail, anchors: AnchorFile, verify_command: CliRunner) -> None:
    """Whoever deleted the newest rows edits the anchor to name the new last row: its MAC no longer
    holds (and an anchor made up without the key cannot hold)."""
    _drop_append_only(trail)
    with trail() as db, db.begin():
        db.execute(text("DELETE FROM audit_events WHERE id > 3"))
        row_3 = db.scalar(text("SELECT hash FROM audit_events WHERE id = 3"))
    stamp, _row, _hash, mac = anchors.path.read_text().split()
    anchors.path.write_text(f"{stamp} 3 {row_3} {mac}\n")
    result = verify_command.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1
    assert "line 1: altered, or not an anchor of this trail (its MAC does not match)" in result.output
    with anchors.path.open("a") as file:
        file.write(f"{stamp} 3 {row_3} {'0' * 64}\n")
    with trail() as db:
        assert len(audit.verify(db, anchors=anchors.read()).problems) == 2


def test_a_later_check_from_an_earlier_result_sees_the_newest_rows_deleted(
    trail, anchors: AnchorFile
) -> None:
    with trail() as db:
        earlier = audit.verify(db, anchors=anchors.read())
    assert earlier.ok and earlier.last_anchor is not None and earlier.last_anchor.row_id == 5
    _drop_append_only(trail)
    with trail() as db, db.begin():
        db.execute(text("DELETE FROM audit_events WHERE id = 5"))
    with trail() as db:
        later = audit.verify(db, since=earlier, anchors=anchors.read())
        unanchored = audit.verify(db, since=earlier)
    assert later.walked_from == 0  # the row it went on from is gone: it walked the whole chain
    assert later.problems and "the trail ends at row 4, but row 5 was anchored" in later.problems[0]
    assert unanchored.ok and unanchored.rows == 4


def test_the_anchor_file_is_owner_only_one_line_per_anchor(trail, anchors: AnchorFile) -> None:
    assert stat.S_IMODE(os.stat(anchors.path).st_mode) == 0o600
    [line] = anchors.path.read_text().splitlines()
    stamp, row_id, row_hash, mac = line.split(" ")
    with trail() as db:
        assert (int(row_id), row_hash) == audit.head(db)
    assert stamp.endswith("+00:00") and len(mac) == 64


def test_the_anchorer_anchors_every_n_rows_and_when_it_stops(trail, anchors: AnchorFile) -> None:
    anchorer = Anchorer(trail, anchors, every_seconds=3600, every_rows=3)
    assert anchorer.anchor() is not None  # at start
    assert anchorer.tick() is None  # nothing new
    _append(trail, 2)
    assert anchorer.tick() is None  # 2 rows: not yet
    _append(trail, 1)
    assert anchorer.tick() == (8, _head_hash(trail))
    _append(trail, 1)
    assert anchorer.anchor() == (9, _head_hash(trail))  # when it stops, whatever moved
    assert [anchor.row_id for anchor in anchors.read().anchors] == [5, 5, 8, 9]


def test_the_anchorer_anchors_after_n_seconds(trail, anchors: AnchorFile) -> None:
    anchorer = Anchorer(trail, anchors, every_seconds=0.01, every_rows=1000)
    anchorer.anchor()
    _append(trail, 1)
    time.sleep(0.02)
    assert anchorer.tick() == (6, _head_hash(trail))


def _head_hash(factory: sessionmaker[Session]) -> str:
    with factory() as db:
        head = audit.head(db)
    assert head is not None
    return head[1]


def test_rows_from_before_the_key_still_verify_and_the_first_keyed_row_covers_them(
    database_url: str,
) -> None:
    """Migration 0010 keeps the rows written before it (plain SHA-256) and records where they end."""
    command.upgrade(alembic_config(database_url), "0009")
    engine = make_engine(database_url)
    with engine.begin() as connection:
        previous = audit.GENESIS
        for number in range(3):
            row = {
                "prev_hash": previous,
                "occurred_at": f"2026-11-0{number + 1}T10:00:00.000000+00:00",
                "event_type": "Query",
                "action": "E",
                "outcome": 0,
                "username": "before",
                "object_uid": None,
                "source": None,
                "detail": "{}",
            }
            row["hash"] = previous = _unkeyed_hash(row)
            when = datetime.fromisoformat(str(row["occurred_at"]))
            connection.execute(audit.AuditEvent.__table__.insert(), {**row, "occurred_at": when})
    command.upgrade(alembic_config(database_url), "head")
    factory = session_factory(engine, AUDIT_KEY)
    _append(factory, 2)
    with factory() as db:
        result = audit.verify(db)
    assert result.ok and (result.rows, result.unkeyed_rows, result.keyed_from) == (5, 3, 4)
    _drop_append_only(factory)
    _rechain_without_the_key(factory, 2, 3, username="after")  # the old rows, and the keyed one linked
    with factory() as db:
        problems = audit.verify(db).problems
    assert problems == ["row 4: content was altered"]  # its MAC covers the old rows' head
    engine.dispose()


def test_the_first_rows_of_a_new_trail_are_anchored_at_the_next_tick(
    factory: sessionmaker[Session], anchors: AnchorFile
) -> None:
    anchorer = Anchorer(factory, anchors, every_seconds=3600, every_rows=1000)
    assert anchorer.anchor() is None  # an empty trail: nothing to anchor
    _append(factory, 1)
    assert anchorer.tick() == (1, _head_hash(factory))
