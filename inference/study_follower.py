"""Keeps the study index (``inference.study_index``) level with Orthanc, from its ``/changes`` feed, with
a cursor of its own in the database: a study that arrived or left while the platform was down is picked
up when it comes back. The first run (no cursor yet) indexes every study Orthanc already holds.

Orthanc logs no change for a deletion (it drops the deleted study's changes with it), so deletions are
found by comparing: once the feed is read to its end every study Orthanc holds is indexed, and more rows
than Orthanc has studies means some left; those rows are looked up one by one and removed (``reconcile``).

Not part of the inference service: the viewer runs it (``viewer.app``), so the worklist is whole whether
or not inference runs in the same process. A study is indexed at NewStudy (it shows at once) and again at
StableStudy (its other series and images have arrived).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from inference.archive import ArchiveUnavailable, Change, InferenceArchive, NotInArchive
from inference.study_index import IndexedStudy, StudyRecord, forget, indexed_ids, read_study, save
from inference.watcher import ChangeCursor
from openaim.db import transaction
from orthanc import OrthancConnection

log = logging.getLogger("openaim.study_index")

CURSOR_NAME = "study-index"
REINDEX = frozenset({"NewStudy", "StableStudy"})
# A new study shows on the worklist within this (it refreshes every 4 s); idle, one /changes a poll.
POLL_SECONDS = 0.5
# A deleted study leaves the worklist within this: idle, one /statistics and one COUNT each time.
RECONCILE_SECONDS = 5.0
BACKFILL_PAGE = 500


def follow(archive: InferenceArchive, factory: sessionmaker[Session], page: int = 500) -> int:
    """Apply the changes since the cursor to the index; returns how many changes were read.

    Orthanc is read first, outside any transaction; the rows and the new cursor are then written together,
    so a crash in between re-reads the same changes (saving a study twice changes nothing)."""
    with factory() as db:
        cursor = db.get(ChangeCursor, CURSOR_NAME)
        since = None if cursor is None else cursor.last_seq
    if since is None:
        return backfill(archive, factory)
    changes, last, _done = archive.changes(since, limit=page)
    if last <= since:
        return 0
    records, gone = _read_changed(archive, changes)
    with transaction(factory) as db:
        forget(db, gone)
        save(db, records)
        _move_cursor(db, last)
    return len(changes)


def backfill(archive: InferenceArchive, factory: sessionmaker[Session]) -> int:
    """Index every study Orthanc holds, then start the cursor where Orthanc's feed stood before the first
    one was read: what changed meanwhile is read again, never missed. Returns how many studies it read."""
    start = archive.last_change()
    position, count = 0, 0
    while ids := archive.study_ids(position, BACKFILL_PAGE):
        records = [record for record in map(lambda study_id: _read(archive, study_id), ids) if record]
        with transaction(factory) as db:
            save(db, records)
        position, count = position + len(ids), count + len(records)
    with transaction(factory) as db:
        _move_cursor(db, start)
    log.info("study index: %d studies indexed from the archive", count)
    return count


def _read_changed(archive: InferenceArchive, changes: list[Change]) -> tuple[list[StudyRecord], list[str]]:
    """The studies these changes touch, read as they are now; those no longer there, to forget."""
    touched = dict.fromkeys(
        change.resource_id
        for change in changes
        if change.resource_type == "Study" and change.change_type in REINDEX
    )
    records, gone = [], []
    for study_id in touched:
        record = _read(archive, study_id)
        if record is None:
            gone.append(study_id)
        else:
            records.append(record)
    return records, gone


def reconcile(archive: InferenceArchive, factory: sessionmaker[Session]) -> int:
    """Remove the rows of studies Orthanc no longer holds; returns how many. Call it once the feed is read
    to its end: the index then holds every study Orthanc has, so a surplus of rows is what was deleted."""
    with factory() as db:
        indexed = int(db.scalar(select(func.count()).select_from(IndexedStudy)) or 0)
    if indexed <= archive.study_count():
        return 0
    held: set[str] = set()
    position = 0
    while ids := archive.study_ids(position, BACKFILL_PAGE):
        held.update(ids)
        position += len(ids)
    with factory() as db:
        missing = [study_id for study_id in indexed_ids(db) if study_id not in held]
    # Each one looked up again: a study stored after the listing began is not in it, and must stay.
    gone = [study_id for study_id in missing if _gone_from(archive, study_id)]
    with transaction(factory) as db:
        forget(db, gone)
    if gone:
        log.info("study index: %d studies left the archive", len(gone))
    return len(gone)


def _gone_from(archive: InferenceArchive, study_id: str) -> bool:
    try:
        archive.study(study_id)
    except NotInArchive:
        return True
    return False


def _read(archive: InferenceArchive, study_id: str) -> StudyRecord | None:
    try:
        return read_study(archive, study_id)
    except NotInArchive:
        return None  # deleted since it was announced or listed


def _move_cursor(db: Session, last: int) -> None:
    cursor = db.get(ChangeCursor, CURSOR_NAME) or ChangeCursor(name=CURSOR_NAME)
    cursor.last_seq = last
    db.add(cursor)


def run(archive: InferenceArchive, factory: sessionmaker[Session], stop: threading.Event) -> None:
    """Follow until ``stop`` is set; an archive that does not answer is tried again next poll."""
    next_reconcile = 0.0
    while not stop.is_set():
        try:
            busy = follow(archive, factory) > 0
            if not busy and time.monotonic() >= next_reconcile:
                reconcile(archive, factory)
                next_reconcile = time.monotonic() + RECONCILE_SECONDS
        except ArchiveUnavailable as error:
            log.warning("study index: archive unavailable: %s", error)
            busy = False
        except Exception:  # the loop must outlive any single bug
            log.exception("study index: error")
            busy = False
        if not busy:
            stop.wait(POLL_SECONDS)


@contextmanager
def in_background(connection: OrthancConnection, factory: sessionmaker[Session]) -> Iterator[None]:
    """The follower in a daemon thread, stopped and joined on exit."""
    archive = InferenceArchive(connection, timeout=30.0)
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(archive, factory, stop), name="study-index", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        archive.close()
