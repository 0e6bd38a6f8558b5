"""Owner-only files and folders for what the platform keeps on disk: the database, Orthanc's storage, its
log and configuration, generated secrets. They hold patient data or the keys to it, so nobody but the
account the platform runs under may read them: files 0600, folders 0700, whatever the umask.

Files other programs create inside (SQLite's -wal and -shm files, which SQLite gives the database's own
mode; Orthanc's storage, which it writes under the umask ``PRIVATE_UMASK`` that the launcher gives it)
follow from that.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

FILE_MODE = 0o600
FOLDER_MODE = 0o700
PRIVATE_UMASK = 0o077  # what a child process creates is its owner's only


def private_folder(path: Path) -> Path:
    """``path`` as a folder only its owner may enter (made with its missing parents; an existing one has
    its mode narrowed). Parents that existed already are left as they are: they may be shared."""
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    os.chmod(path, FOLDER_MODE)
    return path


def private_file(path: Path) -> Path:
    """``path`` as a file only its owner may read: created empty with that mode (never readable by others,
    not even for a moment), or an existing one's mode narrowed.

    An existing file is never opened: closing any descriptor of a file drops every POSIX lock the process
    holds on it, and SQLite keeps its locks that way (a second engine on a database in use would have
    released the first one's locks, and another process then read the database as if nobody were writing)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        os.chmod(path, FILE_MODE)
        return path
    try:
        os.fchmod(descriptor, FILE_MODE)  # whatever the umask
    finally:
        os.close(descriptor)
    return path


def private_sqlite_file(url: str) -> None:
    """Create a SQLite database file 0600 before SQLite does (it would follow the umask: 0644)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database.startswith((":memory:", "file:")):
        return
    private_file(Path(database))
    for suffix in ("-wal", "-shm", "-journal"):  # left by a run before this check, with the umask's mode
        if (companion := Path(database + suffix)).exists():
            os.chmod(companion, FILE_MODE)
