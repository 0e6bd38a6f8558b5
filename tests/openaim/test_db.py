"""The schema comes only from Alembic migrations, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from openaim.db import make_engine, upgrade
from openaim.schema import metadata


def test_upgrade_creates_every_table_and_is_idempotent(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)
    engine = make_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migrations_match_the_models(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    assert differences == []


def test_a_savepoint_first_in_a_transaction_does_not_commit_it(factory) -> None:
    """pysqlite begins a transaction at the first INSERT only: a SAVEPOINT before one began it itself, and
    its RELEASE committed everything, in the middle of the transaction (issue 15 item 7: a feedback save
    committed before its audit event)."""
    with pytest.raises(RuntimeError, match="later"), factory() as db, db.begin():
        with db.begin_nested():
            db.execute(text("INSERT INTO audit_chain (id, unkeyed_until) VALUES (2, 0)"))
        raise RuntimeError("a later step of the transaction failed")
    with factory() as db:
        assert db.execute(text("SELECT count(*) FROM audit_chain WHERE id = 2")).scalar() == 0
