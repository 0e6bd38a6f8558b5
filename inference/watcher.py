"""Learning of new studies from Orthanc's ``/changes``, with the cursor kept in the database.

Only ``StableStudy`` matters: a study is routed once Orthanc has seen no new instance for StableAge
seconds. The cursor is advanced in the same transaction that records what the changes led to, so a crash
either keeps both or neither.

A study becomes stable again whenever something is added to it, our own SR and SEG first of all. Its
series that already have jobs, and the result series those jobs write, are not read or routed again: a
series is routed to the models enabled when its study first became stable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from inference.archive import InferenceArchive, NotInArchive
from inference.catalog import ModelVersion
from inference.dicom_results.uids import ResultUids
from inference.jobs import Job
from inference.own_objects import is_own_object
from inference.router import Candidate, UnroutedSeries, route_series
from openaim.db import Base, UTCDateTime, transaction, utcnow


class ChangeCursor(Base):
    __tablename__ = "orthanc_change_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)  # one row per archive watched
    last_seq: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


CURSOR_NAME = "orthanc"
STABLE_STUDY = "StableStudy"


@dataclass(frozen=True)
class SeriesToRoute:
    study_uid: str
    series_uid: str
    tags: dict[str, Any]


def poll(
    archive: InferenceArchive,
    factory: sessionmaker[Session],
    candidates_of: Callable[[Session], list[Candidate]],
    page: int = 200,
) -> int:
    """Route the stable studies announced since the cursor; returns how many changes were read.

    Orthanc is asked first, outside any transaction; then the routing and the new cursor are written
    together, so a crash in between re-reads the same changes and, jobs being unique, queues nothing twice.
    """
    with factory() as db:
        cursor = db.get(ChangeCursor, CURSOR_NAME)
        since = cursor.last_seq if cursor else 0
    changes, last, _done = archive.changes(since, limit=page)
    if last <= since:  # nothing new: an idle poll (several a second) reads, never writes
        return 0
    to_route = [
        series
        for change in changes
        if change.change_type == STABLE_STUDY
        for series in new_series_of(archive, factory, change.resource_id)
    ]
    with transaction(factory) as db:
        route(db, to_route, candidates_of(db))
        cursor = db.get(ChangeCursor, CURSOR_NAME) or ChangeCursor(name=CURSOR_NAME)
        cursor.last_seq = last
        db.add(cursor)
    return len(changes)


def route(db: Session, to_route: list[SeriesToRoute], candidates: list[Candidate]) -> None:
    """Each series to the models that accept it (or listed as unrouted), our own SR and SEG left out: the
    one way a series is routed, whether the change feed or the reconciliation sweep (reconcile.py) found
    it."""
    ours = set(db.scalars(select(ModelVersion.device_uid)))
    for series in to_route:
        if is_own_object(series.tags, ours):  # our own SR/SEG re-stabilise the study: not news
            # listed as unrouted before it was recognised (a version since gone from the catalog)
            db.execute(delete(UnroutedSeries).where(UnroutedSeries.series_uid == series.series_uid))
        else:
            route_series(db, series.study_uid, series.series_uid, series.tags, candidates)


def new_series_of(
    archive: InferenceArchive, factory: sessionmaker[Session], study_id: str
) -> list[SeriesToRoute]:
    """The study's series not routed before, with the attributes of each one's first instance."""
    try:
        study_uid = archive.study_uid(study_id)
        series = archive.series_of_study(study_id)
        with factory() as db:
            seen = routed_series(db, study_uid)
        found = []
        for series_uid, series_id in series.items():
            first = None if series_uid in seen else archive.first_instance(series_id)
            if first is not None:
                found.append(SeriesToRoute(study_uid, series_uid, archive.instance_tags(first)))
        return found
    except NotInArchive:
        return []  # deleted since it was announced: nothing to route


def routed_series(db: Session, study_uid: str) -> set[str]:
    """The study's series that have jobs, and the SR and SEG series those jobs store."""
    jobs = db.execute(
        select(Job.series_uid, ModelVersion.device_uid)
        .join(ModelVersion, ModelVersion.id == Job.model_version_id)
        .where(Job.study_uid == study_uid)
    ).all()
    results = {uid for series_uid, device_uid in jobs for uid in ResultUids.of(series_uid, device_uid).series}
    return {series_uid for series_uid, _device_uid in jobs} | results
