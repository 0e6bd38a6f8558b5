"""The study index filled the way the viewer's follower fills it, for tests that arrange studies in a real
Orthanc and then look at the worklist: studies indexed by UID, or the follower run until caught up."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from inference import study_follower
from inference.archive import InferenceArchive
from inference.study_index import read_study, save
from inference.watcher import ChangeCursor
from openaim.db import transaction
from orthanc import OrthancConnection
from orthanc.rest import OrthancRest


def index_studies(orthanc: OrthancConnection, db: sessionmaker[Session], *study_uids: str) -> None:
    """Index these studies now, as the follower does when Orthanc announces them."""
    archive = InferenceArchive(orthanc)
    with OrthancRest(orthanc) as rest:
        ids = [orthanc_id for uid in study_uids for orthanc_id in rest.lookup(uid, "Study")]
    try:
        records = [read_study(archive, orthanc_id) for orthanc_id in ids]
    finally:
        archive.close()
    with transaction(db) as session:
        save(session, records)


def follow_from_now(orthanc: OrthancConnection, db: sessionmaker[Session]) -> None:
    """Start the follower's cursor at Orthanc's newest change, as if every older study were indexed
    (the session's Orthanc holds other tests' studies: a first-run backfill of all of them is slow)."""
    with OrthancRest(orthanc) as rest:
        last = rest.last_change()
    with transaction(db) as session:
        session.add(ChangeCursor(name=study_follower.CURSOR_NAME, last_seq=last))


def catch_up(orthanc: OrthancConnection, db: sessionmaker[Session]) -> None:
    """Run the follower until it has read every change, then look for studies Orthanc deleted."""
    archive = InferenceArchive(orthanc)
    try:
        while study_follower.follow(archive, db):
            pass
        study_follower.reconcile(archive, db)
    finally:
        archive.close()
