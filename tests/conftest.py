"""Shared fixtures: one real Orthanc per test session, databases on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from openaim.db import make_engine, session_factory, upgrade
from openaim.settings import REPO_ROOT
from orthanc import OrthancConnection, OrthancServer
from orthanc.launcher import free_port

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
POSTGRES_URL_VARIABLE = "OPENAIM_TEST_POSTGRES_URL"
AUDIT_KEY = b"the audit chain's key in tests, 32+ bytes long"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"the shared test data is missing: expected {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A real Orthanc process, on a free loopback port, for the whole test session."""
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"), http_port=free_port(), stable_age=2)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def orthanc(orthanc_server: OrthancServer) -> OrthancConnection:
    return orthanc_server.connection


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh database on the CI PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'openaim.db'}"
        return
    server_url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not server_url:
        pytest.skip(f"{POSTGRES_URL_VARIABLE} is not set (.ci/run sets it to the local PostgreSQL)")
    name = f"openaim_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated, empty database (SQLite, and PostgreSQL where configured), with the audit
    trail's key."""
    upgrade(database_url)
    engine = make_engine(database_url)
    yield session_factory(engine, AUDIT_KEY)
    engine.dispose()
