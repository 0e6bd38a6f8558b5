"""What the platform keeps on disk is its owner's only: the data folder 0700; the SQLite database, its WAL
and shared-memory files and the generated secrets 0600, under the usual umask (022) and when an earlier
run left them readable by everyone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from openaim.db import make_engine, upgrade
from openaim.settings import Settings, generated_secret


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_folder_the_database_and_its_companions_are_owner_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    data = settings.resolved_data_dir
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    try:
        with engine.connect() as connection:  # WAL: a write leaves -wal and -shm beside the database
            connection.execute(text("CREATE TABLE probe (x INTEGER)"))
            connection.commit()
            files = sorted(data.iterdir())
            assert {path.name for path in files} >= {"openaim.db", "openaim.db-wal", "openaim.db-shm"}
            assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
    finally:
        engine.dispose()
    assert mode(data) == 0o700


def test_a_database_an_earlier_run_left_readable_is_narrowed(tmp_path: Path) -> None:
    database = tmp_path / "openaim.db"
    database.touch(mode=0o644)
    (tmp_path / "openaim.db-wal").touch(mode=0o644)
    make_engine(f"sqlite:///{database}").dispose()
    assert (mode(database), mode(tmp_path / "openaim.db-wal")) == (0o600, 0o600)


def test_a_generated_secret_and_its_folder_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "demo-password"
    value = generated_secret(path)
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)
    path.chmod(0o644)
    assert generated_secret(path) == value and mode(path) == 0o600


def _count_elsewhere(database: Path) -> int:
    """Rows of ``probe`` as another process sees them (it opens, reads and closes the database)."""
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "print(c.execute('SELECT count(*) FROM probe').fetchone()[0]); c.close()"
    )
    return int(
        subprocess.run(
            [sys.executable, "-c", code, str(database)], check=True, capture_output=True, text=True
        ).stdout
    )


def test_a_second_engine_leaves_the_first_one_s_locks_alone(tmp_path: Path) -> None:
    """SQLite keeps POSIX locks, which closing any descriptor of the file drops for the whole process:
    a permission check that opened the database would let another process, closing last, remove the WAL
    that this process still writes to, and its later writes would be lost."""
    url = f"sqlite:///{tmp_path / 'openaim.db'}"
    first = make_engine(url)
    try:
        with first.connect() as connection:
            connection.execute(text("CREATE TABLE probe (x INTEGER)"))
            connection.execute(text("INSERT INTO probe VALUES (1)"))
            connection.commit()
            make_engine(url).dispose()  # another part of the same process opens the database
            assert _count_elsewhere(tmp_path / "openaim.db") == 1
            connection.execute(text("INSERT INTO probe VALUES (2)"))
            connection.commit()
        assert _count_elsewhere(tmp_path / "openaim.db") == 2
    finally:
        first.dispose()
