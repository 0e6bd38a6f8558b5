"""Which series of a study a signed-in user may see now: the one rule that every route naming or returning
series or instances goes through (the DICOMweb proxy, the viewport's APIs, thumbnails, overlays, masks and
the study page). tests/viewer/reading/test_ai_policy_routes.py holds the table of those routes, built from
the app's routes: a new route that takes a study UID and is missing from it fails.

Two reasons to hide a series, both by series (the unit of Modality; an SR filed inside an image series is
not recognised):

- Blinded read. A reader with ``blinded_read`` sees no AI series of a study (SR and SEG: other vendors'
  results, ours, and the readers' feedback on them) until they have recorded an impression of that study.
- Trial. Our own result series made by a model version that is not clinical now (shadow, off, retired)
  is seen only by the roles that monitor models, ``MONITOR_ROLES``: admin and governance. Everyone else
  never learns it exists, as the AI panel and the worklist already treat shadow results. The series are
  known from the result rows (``ResultUids`` derives their UIDs); an SR of ours that the database has no
  row for (a database rebuilt beside a kept archive) is treated as the AI panel treats it: another
  vendor's.

A hidden series answers as if absent: 404 on its own routes, left out of study-level answers.

QIDO-RS at study level is left alone: ModalitiesInStudy and NumberOfStudyRelatedSeries may say that a study
has an SR or SEG, never what it found; hiding them would cost a database query per study of each search.

Cost: the study's series, sorted into images, AI and trial, are kept per study for ``session_recheck_s``
seconds (the staleness already accepted for the pixel routes' session check), and asked again at once when
a request names a series the kept answer does not know (a result stored a moment ago). So a frame of an
image series costs a dictionary lookup; only a request for an AI series asks the database who the user is.
A study with AI series also has their instances listed (Orthanc's index, no file read): the frame and
thumbnail caches are keyed by instance, so an AI instance named under an image series is refused.
Answers about a whole study (the study page, the series search, the study's metadata) look afresh, once
per study opened, and leave out any series stored since they looked.
A mode change made through this process forgets at once; one made by the CLI waits out the delay.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference.catalog import Mode, ModelVersion
from inference.dicom_results.uids import ResultUids
from inference.results import InferenceResult
from viewer.access.deps import SignedInUser
from viewer.access.session_memo import SignedIn
from viewer.access.users import Role, User
from viewer.archive.client import Archive
from viewer.archive.uids import SeriesUID, StudyUID
from viewer.reading.reads import NO_IMPRESSION, StudyRead

AI_MODALITIES = frozenset({"SR", "SEG"})
MONITOR_ROLES = (Role.ADMIN, Role.GOVERNANCE)
STUDIES_KEPT = 2_000
NOT_FOUND = "Not found in the archive."


@dataclass(frozen=True)
class StudySeries:
    """A study's series as the rule sorts them."""

    known: frozenset[str]  # every series of the study
    ai: frozenset[str]  # SR and SEG series: hidden from a blinded reader before their impression
    trial: frozenset[str]  # ours, from a version that is not clinical: seen only by MONITOR_ROLES
    # The instances of the AI series: the frame and thumbnail caches are keyed by instance, so an AI
    # instance named under an image series must not be served from them.
    ai_instances: frozenset[str] = frozenset()


def sort_series(series: Iterable[Dataset], other: set[str]) -> StudySeries:
    """``series``: the study's series (QIDO-RS); ``other``: the series UIDs that our results of versions
    not clinical were written to (``trial_series``)."""
    known, ai, trial = set(), set(), set()
    for item in series:
        uid = str(item.get("SeriesInstanceUID", ""))
        known.add(uid)
        if str(item.get("Modality", "")).strip().upper() not in AI_MODALITIES:
            continue
        ai.add(uid)
        if uid in other:
            trial.add(uid)
    return StudySeries(frozenset(known), frozenset(ai), frozenset(trial))


def trial_series(factory: sessionmaker[Session], study_uid: str) -> set[str]:
    """The series that our results of the study from versions not clinical now were written to."""
    query = (
        select(InferenceResult.series_uid, ModelVersion.device_uid, ModelVersion.mode)
        .join(ModelVersion, ModelVersion.id == InferenceResult.model_version_id)
        .where(InferenceResult.study_uid == study_uid)
    )
    clinical: set[str] = set()
    other: set[str] = set()
    with factory() as db:
        for series_uid, device_uid, mode in db.execute(query):
            target = clinical if mode == Mode.CLINICAL.value else other
            target.update(ResultUids.of(series_uid, device_uid).series)
    return other - clinical


def blinded_before_impression(factory: sessionmaker[Session], user_id: int, study_uid: str) -> bool:
    """The blinded read's rule (viewer/reading/reads.py ``ai_hidden``), for a user known only by id."""
    with factory() as db:
        if not db.scalar(select(User.blinded_read).where(User.id == user_id)):
            return False
        given = select(StudyRead.id).where(
            StudyRead.study_uid == study_uid,
            StudyRead.user_id == user_id,
            StudyRead.impression != NO_IMPRESSION,
        )
        return db.scalar(given.limit(1)) is None


class StudySeriesMemo:
    """``StudySeries`` per study, each trusted for ``seconds``."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, StudySeries]] = OrderedDict()

    def get(self, study_uid: str) -> StudySeries | None:
        entry = self._entries.get(study_uid)
        if entry is None or self._clock() - entry[0] > self.seconds:
            return None
        return entry[1]

    def put(self, study_uid: str, series: StudySeries) -> None:
        if self.seconds <= 0:
            return
        self._entries[study_uid] = (self._clock(), series)
        self._entries.move_to_end(study_uid)
        while len(self._entries) > STUDIES_KEPT:
            self._entries.popitem(last=False)

    def forget_all(self) -> None:
        """After a model's mode changed: which studies its results are in is not worth working out."""
        self._entries.clear()


def series_memo(request: Request) -> StudySeriesMemo:
    """The app's one memo, made on first use."""
    state = request.app.state
    memo: StudySeriesMemo | None = getattr(state, "study_series", None)
    if memo is None:
        memo = state.study_series = StudySeriesMemo(state.settings.session_recheck_s)
    return memo


def forget_study_series(request: Request) -> None:
    """Call after changing a model version's mode, so that no trial result stays shown a moment longer."""
    series_memo(request).forget_all()


async def study_series(
    request: Request, study_uid: str, naming: str | None = None, fresh: bool = False
) -> StudySeries:
    """The study's series, from the memo unless it is stale, does not know ``naming``, or ``fresh``."""
    memo = series_memo(request)
    found = None if fresh else memo.get(study_uid)
    if found is None or (naming is not None and naming not in found.known):
        archive: Archive = request.app.state.archive
        listed = await archive.search_series(study_uid)
        other: set[str] = set()
        if any(str(item.get("Modality", "")).strip().upper() in AI_MODALITIES for item in listed):
            other = await run_in_threadpool(trial_series, request.app.state.db, study_uid)
        found = sort_series(listed, other)
        if found.ai:
            indexed = await archive.indexed_instances(study_uid)  # Orthanc's index: no file read
            in_ai = frozenset(item.instance_uid for item in indexed if item.series_uid in found.ai)
            found = replace(found, ai_instances=in_ai)
        memo.put(study_uid, found)
    return found


@dataclass(frozen=True)
class SeriesFilter:
    """What an answer about a whole study may include for this user."""

    known: frozenset[str]  # the study's series when the policy looked
    hidden: frozenset[str]

    def shows(self, series_uid: str) -> bool:
        """A series the policy did not know (stored since it looked) is left out too, until next time."""
        return series_uid in self.known and series_uid not in self.hidden


async def hidden_series(
    request: Request, study_uid: str, user: SignedIn, series: StudySeries
) -> frozenset[str]:
    """The series of the study this user may not see now (kept for the rest of the request)."""
    kept: dict[str, frozenset[str]] | None = getattr(request.state, "hidden_series", None)
    if kept is None:
        kept = request.state.hidden_series = {}
    if study_uid in kept:
        return kept[study_uid]
    hidden: frozenset[str] = frozenset()
    if series.ai:
        monitors = user.has_any_role(*MONITOR_ROLES)
        blinded = await run_in_threadpool(
            blinded_before_impression, request.app.state.db, user.user_id, study_uid
        )
        hidden = (series.ai if blinded else frozenset()) | (frozenset() if monitors else series.trial)
    kept[study_uid] = hidden
    return hidden


async def shown_series(
    request: Request, study_uid: StudyUID, series_uid: SeriesUID, user: SignedInUser
) -> str:
    """The dependency of every route that names a series: 404, as if absent, for a series this user may not
    see, or one that is not in the study. An image series the memo knows costs one lookup."""
    instance_uid = request.path_params.get("instance_uid")
    series = series_memo(request).get(study_uid)
    if (
        series is not None
        and series_uid in series.known
        and series_uid not in series.ai
        and instance_uid not in series.ai_instances
    ):
        return series_uid  # the hot path: a frame of an image series
    _check_route_parameters(request)
    series = await study_series(request, study_uid, naming=series_uid)
    if series_uid not in series.known:
        raise HTTPException(404, NOT_FOUND)
    if series_uid not in series.ai and instance_uid in series.ai_instances:
        raise HTTPException(404, NOT_FOUND)  # an AI instance named under an image series: not in it
    if series_uid in series.ai and series_uid in await hidden_series(request, study_uid, user, series):
        raise HTTPException(404, NOT_FOUND)
    return series_uid


def _check_route_parameters(request: Request) -> None:
    """FastAPI calls a route's dependencies before it validates the route's own path parameters (a frame
    number, an instance UID): validate them first, so that a malformed one is answered 422 without a
    question to the archive."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    _, errors = request_params_to_args(dependant.path_params, request.path_params)
    if errors:
        raise RequestValidationError(errors)


async def study_series_filter(request: Request, study_uid: StudyUID, user: SignedInUser) -> SeriesFilter:
    """The dependency of every route that answers about a whole study (the study page, the series search,
    the study's metadata): what to leave out. It looks at the study afresh, not in the memo: a result stored
    a moment ago must not slip into the list before the memo learns of it. These routes are called once
    per study opened, not once per frame."""
    series = await study_series(request, study_uid, fresh=True)
    return SeriesFilter(series.known, await hidden_series(request, study_uid, user, series))


ShownSeries = Annotated[str, Depends(shown_series)]
StudySeriesFilter = Annotated[SeriesFilter, Depends(study_series_filter)]
