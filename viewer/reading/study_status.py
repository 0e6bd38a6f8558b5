"""What the worklist says about each study beside the archive's data: the AI's status and triage flag,
and whether it has been read. Only clinical model versions count: shadow results never reach a reader.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.catalog import Mode, ModelVersion
from inference.jobs import Job, JobState
from inference.results import InferenceResult
from inference.router import UnroutedSeries
from viewer.reading.reads import studies_read


class AIStatus(StrEnum):
    WAITING = "waiting"  # not routed yet, or queued
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    NOT_APPLICABLE = "not applicable"  # no clinical model takes any of its series


class Triage(StrEnum):
    URGENT = "urgent"
    PRIORITY = "priority"
    ROUTINE = "routine"
    NONE = "none"  # no flag: no result, or a model without triage rules

    @property
    def rank(self) -> int:
        """Sort key: urgent first."""
        return list(Triage).index(self)

    @property
    def icon(self) -> str:
        """A shape per level beside its word and colour, so a colour-blind reader tells them apart too."""
        return _TRIAGE_ICONS[self]


_TRIAGE_ICONS = {Triage.URGENT: "!!", Triage.PRIORITY: "!", Triage.ROUTINE: "-", Triage.NONE: ""}


_TRIAGE_BY_VALUE = {flag.value: flag for flag in Triage}
_NO_FLAG = (Triage.NONE, False)  # (flag, raised only by failed results)

# When a study's series are in several states, the one a reader most needs to know about wins.
_STATUS_OF_JOBS = (
    (JobState.RUNNING, AIStatus.RUNNING),
    (JobState.QUEUED, AIStatus.WAITING),
    (JobState.FAILED, AIStatus.FAILED),
    (JobState.DONE, AIStatus.DONE),
    (JobState.NOT_APPLICABLE, AIStatus.NOT_APPLICABLE),
)


@dataclass(frozen=True)
class StudyStatus:
    ai: AIStatus
    triage: Triage
    read: bool
    # The flag comes only from results whose job failed (their SR/SEG never reached the archive). The flag
    # still sorts the study, since the model did say it, but the worklist must say the result failed.
    triage_failed: bool = False


def study_statuses(db: Session, study_uids: Collection[str]) -> dict[str, StudyStatus]:
    uids = list(study_uids)
    if not uids:
        return {}
    job_states = _clinical_job_states(db, uids)
    triage = _triage(db, uids)
    routed = _seen_by_router(db, uids)
    read = studies_read(db, uids)
    return {
        uid: StudyStatus(
            ai=_ai_status(job_states.get(uid, set()), uid in routed),
            triage=triage.get(uid, _NO_FLAG)[0],
            read=uid in read,
            triage_failed=triage.get(uid, _NO_FLAG)[1],
        )
        for uid in uids
    }


def _ai_status(states: set[str], seen_by_router: bool) -> AIStatus:
    for state, status in _STATUS_OF_JOBS:
        if state.value in states:
            return status
    # No clinical job: either nothing has decided yet, or only shadow models (or none) took its series.
    return AIStatus.NOT_APPLICABLE if seen_by_router else AIStatus.WAITING


def _clinical_job_states(db: Session, uids: list[str]) -> dict[str, set[str]]:
    query = (
        select(Job.study_uid, Job.state)
        .join(ModelVersion, ModelVersion.id == Job.model_version_id)
        .where(Job.study_uid.in_(uids), ModelVersion.mode == Mode.CLINICAL.value)
        .distinct()
    )
    states: dict[str, set[str]] = {}
    for study_uid, state in db.execute(query):
        states.setdefault(study_uid, set()).add(state)
    return states


def _seen_by_router(db: Session, uids: list[str]) -> set[str]:
    with_jobs = select(Job.study_uid).where(Job.study_uid.in_(uids))
    unrouted = select(UnroutedSeries.study_uid).where(UnroutedSeries.study_uid.in_(uids))
    return set(db.scalars(with_jobs.union(unrouted)))


def _triage(db: Session, uids: list[str]) -> dict[str, tuple[Triage, bool]]:
    """Each study's highest flag, and whether every result raising it belongs to a failed job."""
    query = (
        select(InferenceResult.study_uid, InferenceResult.triage, Job.state)
        .join(ModelVersion, ModelVersion.id == InferenceResult.model_version_id)
        .join(Job, Job.id == InferenceResult.job_id)
        .where(InferenceResult.study_uid.in_(uids), ModelVersion.mode == Mode.CLINICAL.value)
    )
    flags: dict[str, tuple[Triage, bool]] = {}
    for study_uid, value, state in db.execute(query):
        flag, failed = _TRIAGE_BY_VALUE.get(value or "", Triage.NONE), state == JobState.FAILED.value
        best, best_failed = flags.get(study_uid, _NO_FLAG)
        if flag.rank < best.rank:
            flags[study_uid] = (flag, failed)
        elif flag is best and flag is not Triage.NONE:
            flags[study_uid] = (flag, best_failed and failed)  # one stored result makes the flag good
    return flags
