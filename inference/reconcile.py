"""The reconciliation sweep: every stable study's series ends with a job or an "unrouted" row, even when the
change that should have announced it never came.

Orthanc announces StableStudy from a timer it keeps in memory. When Orthanc stops (killed, crashed, or
stopped with the platform) while a study is still settling, the timer is lost: after the restart Orthanc
counts the study stable but never announces it, and the watcher, which reads only the change feed, never
routes it. Killing the platform with SIGKILL during inference left 16 of 24 new studies so, "waiting" on the
worklist forever. The sweep reads Orthanc's own list of series instead of the feed, looks up in the database
which ones already have a job or an unrouted row, and sends the studies of the rest through the watcher's
own routing (watcher.new_series_of, watcher.route), so selectors, one job per series and model version, and
the leaving out of our own SR and SEG stay in one place. Running it again changes nothing.

It runs when the inference service starts and every ``inference_reconcile_seconds``. Its cost grows with the
archive: one expanded page of Orthanc's series index per ``PAGE`` series and one database query per page;
only a study with a series unaccounted for costs more (its series and one instance's attributes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference.archive import InferenceArchive, ListedSeries, NotInArchive
from inference.jobs import Job
from inference.own_objects import is_own_object
from inference.router import Candidate, UnroutedSeries
from inference.watcher import new_series_of, route
from openaim.db import transaction

log = logging.getLogger("openaim.inference")

PAGE = 1000  # series per request to Orthanc's index


@dataclass(frozen=True)
class SweepReport:
    series_listed: int  # every series in the archive
    studies_unaccounted: int  # stable studies with a series that had neither a job nor an unrouted row
    series_routed: int  # series this sweep sent to the router


def sweep(
    archive: InferenceArchive,
    factory: sessionmaker[Session],
    candidates_of: Callable[[Session], list[Candidate]],
    page: int = PAGE,
) -> SweepReport:
    """Route the series of stable studies that the change feed never brought to the router."""
    listed, studies = 0, set()
    since = 0
    while True:
        series = archive.series_page(since, page)
        listed += len(series)
        studies |= _studies_with_unaccounted_series(factory, series)
        if len(series) < page:
            break
        since += page
    routed = sum(_route_study(archive, factory, candidates_of, study_id) for study_id in sorted(studies))
    report = SweepReport(listed, len(studies), routed)
    if routed:  # counts only: a series UID names a patient's examination
        log.warning(
            "reconciliation: %d series of %d stable studies had never been routed (no StableStudy change); "
            "routed now",
            routed,
            len(studies),
        )
    return report


def _studies_with_unaccounted_series(factory: sessionmaker[Session], series: list[ListedSeries]) -> set[str]:
    """Orthanc's IDs of the studies among ``series`` holding one with neither a job nor an unrouted row.
    Our own SR and SEG never get either: Orthanc's index already has what tells them apart (modality,
    series number and description), so they cost no further request."""
    uids = {item.series_uid for item in series}
    if not uids:
        return set()
    with factory() as db:
        accounted = set(db.scalars(select(Job.series_uid).where(Job.series_uid.in_(uids))))
        accounted |= set(
            db.scalars(select(UnroutedSeries.series_uid).where(UnroutedSeries.series_uid.in_(uids)))
        )
    return {
        item.study_id
        for item in series
        if item.series_uid not in accounted and not is_own_object(item.main_tags, set())
    }


def _route_study(
    archive: InferenceArchive,
    factory: sessionmaker[Session],
    candidates_of: Callable[[Session], list[Candidate]],
    study_id: str,
) -> int:
    """Route the study's new series if it is stable; a study still settling is left to its StableStudy."""
    try:
        if not archive.study_is_stable(study_id):
            return 0
    except NotInArchive:
        return 0  # deleted since it was listed
    to_route = new_series_of(archive, factory, study_id)
    with transaction(factory) as db:
        route(db, to_route, candidates_of(db))
    return len(to_route)
