"""The feedback API the AI panel saves through: one JSON POST per click, idempotent by the client's id, so
a browser that lost the answer simply sends the same save again. The server, not the browser, records
which algorithm the feedback is about and whether the AI was visible."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.catalog import ModelVersion
from inference.results import Finding, InferenceResult
from openaim import audit
from openaim.uids import UID_PATTERN
from viewer.access.deps import ArchiveClient, Audit, DbSession, Reader
from viewer.ai_results.foreign_results import algorithm_info, cached_instance
from viewer.archive.client import Archive
from viewer.archive.uids import StudyUID
from viewer.feedback import records
from viewer.feedback.records import FeedbackConflictError, FeedbackInput, Kind, Reason, Verdict
from viewer.reading.archived_study import ArchivedStudy
from viewer.reading.reads import ai_hidden

router = APIRouter(prefix="/api/studies/{study_uid}/feedback")

FALSE_POSITIVE_REASONS = {
    Reason.FALSE_POSITIVE_ARTEFACT,
    Reason.FALSE_POSITIVE_NORMAL_VARIANT,
    Reason.FALSE_POSITIVE_OTHER_FINDING,
    Reason.WRONG_LOCATION,
}
Uid = Annotated[str, Field(pattern=UID_PATTERN, max_length=64)]
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,80}$")]


class Mark(BaseModel):
    """A box the reader drew on one frame, in image pixels."""

    model_config = ConfigDict(extra="forbid")
    instance_uid: Uid
    frame: Annotated[int, Field(ge=1, le=100_000)] = 1
    box: Annotated[list[Annotated[float, Field(ge=0, le=100_000)]], Field(min_length=4, max_length=4)]


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_id: Annotated[str, Field(pattern=r"^[0-9a-fA-F-]{8,36}$")]
    kind: Kind
    result_id: Id | None = None
    finding_id: Id | None = None
    missed_id: Annotated[str, Field(pattern=r"^[0-9a-fA-F-]{8,36}$")] | None = (
        None  # a missed finding's own id
    )
    verdict: Verdict | None = None
    reason: Reason | None = None
    comment: Annotated[str, Field(max_length=2000)] | None = None
    mark: Mark | None = None
    triage_correct: bool | None = None
    review_requested: bool = False
    seconds_on_study: Annotated[float, Field(ge=0, le=86_400)] | None = None

    @model_validator(mode="after")
    def _complete_for_its_kind(self) -> FeedbackBody:
        problems = {
            Kind.FINDING: self._finding_problems,
            Kind.MISSED: self._missed_problems,
            Kind.STUDY: self._study_problems,
        }[self.kind]()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _finding_problems(self) -> list[str]:
        problems = []
        if not (self.result_id and self.finding_id and self.verdict):
            problems.append("feedback on a finding needs result_id, finding_id and verdict")
        if self.reason is not None and (
            self.verdict is not Verdict.DISAGREE or self.reason not in FALSE_POSITIVE_REASONS
        ):
            problems.append("a reason goes with disagree: a false-positive reason or wrong_location")
        if self.mark is not None and self.reason is not Reason.WRONG_LOCATION:
            problems.append("a box on a finding marks its right location: reason wrong_location")
        return problems

    def _missed_problems(self) -> list[str]:
        problems = []
        if self.mark is None or self.missed_id is None:
            problems.append("a missed finding needs missed_id and the box the reader drew (mark)")
        if self.verdict is not None or self.reason not in (None, Reason.FALSE_NEGATIVE):
            problems.append("a missed finding is a false negative: no verdict, no other reason")
        return problems

    def _study_problems(self) -> list[str]:
        if self.verdict or self.reason or self.mark or self.finding_id:
            return ["study feedback has triage_correct, review_requested and comment only"]
        return []

    @property
    def target(self) -> str:
        if self.kind is Kind.FINDING:
            return f"finding:{self.finding_id}"
        if self.kind is Kind.MISSED:
            return f"missed:{self.missed_id}"
        return "study"


@router.post("")
async def save_feedback(
    study_uid: StudyUID,
    body: FeedbackBody,
    user: Reader,
    _archived: ArchivedStudy,
    db: DbSession,
    archive: ArchiveClient,
    trail: Audit,
) -> Response:
    if ai_hidden(db, user, study_uid):  # 403, not 409: the browser's outbox retries a 409, never a 403
        raise HTTPException(403, "Blinded read: record your impression of the study first.")
    algorithm = await _algorithm(db, archive, study_uid, body.result_id)
    given = FeedbackInput(
        client_id=body.client_id.lower(),
        study_uid=study_uid,
        kind=body.kind,
        target=body.target,
        result_id=body.result_id,
        finding_id=body.finding_id,
        finding_label=_finding_label(db, body.result_id, body.finding_id),
        verdict=body.verdict,
        reason=Reason.FALSE_NEGATIVE if body.kind is Kind.MISSED else body.reason,
        comment=(body.comment or "").strip() or None,
        mark=body.mark.model_dump() if body.mark else None,
        triage_correct=body.triage_correct,
        review_requested=body.review_requested,
        seconds_on_study=body.seconds_on_study,
        ai_visible=True,
        **algorithm,
    )

    def save() -> tuple[records.Feedback, bool]:
        row, created = records.save(db, user, given)
        if created:
            trail.record(
                audit.EventType.AI_FEEDBACK,
                action=audit.Action.CREATE if row.version == 1 else audit.Action.UPDATE,
                object_uid=study_uid,
                detail={"feedback": row.id, "kind": row.kind, "target": row.target, "version": row.version}
                | {key: value for key, value in (("verdict", row.verdict), ("reason", row.reason)) if value},
            )
        trail.commit(db)  # with its event, before the answer
        return row, created

    try:
        # Off the event loop: the save waits for the database's write lock while another save holds it,
        # and holds it itself from its insert to its commit, all in this thread.
        row, created = await run_in_threadpool(save)
    except FeedbackConflictError as error:
        raise HTTPException(409, str(error)) from error
    return JSONResponse(_as_json(row), status_code=201 if created else 200)


@router.get("")
def my_feedback(study_uid: StudyUID, user: Reader, db: DbSession) -> dict[str, list[dict[str, Any]]]:
    """This reader's current feedback on the study (newest version of each target)."""
    return {"feedback": [_as_json(row) for row in records.current(db, study_uid, user)]}


def _as_json(row: records.Feedback) -> dict[str, Any]:
    return {
        "id": row.id,
        "client_id": row.client_id,
        "kind": row.kind,
        "target": row.target,
        "version": row.version,
        "verdict": row.verdict,
        "reason": row.reason,
        "comment": row.comment,
        "mark": row.mark,
        "triage_correct": row.triage_correct,
        "review_requested": row.review_requested,
        "created_at": row.created_at.isoformat(timespec="seconds"),
    }


PLATFORM_RESULT = re.compile(r"^platform-(\d+)$")
PLATFORM_FINDING = re.compile(r"^finding-(\d+)$")
FOREIGN_RESULT = re.compile(r"^foreign-([0-9.]{1,64})$")


async def _algorithm(
    db: Session, archive: Archive, study_uid: str, result_id: str | None
) -> dict[str, str | None]:
    """Which algorithm made the result, from what the platform knows (never from the browser)."""
    none: dict[str, str | None] = {"model_id": None, "model_version": None, "device_uid": None}
    if result_id is None:
        return none
    if match := PLATFORM_RESULT.match(result_id):
        query = (
            select(ModelVersion)
            .join(InferenceResult, InferenceResult.model_version_id == ModelVersion.id)
            .where(InferenceResult.id == int(match.group(1)), InferenceResult.study_uid == study_uid)
        )
        version = db.scalar(query)
        if version is None:
            raise HTTPException(404, "No such AI result in this study.")
        return {
            "model_id": version.model_id,
            "model_version": version.version,
            "device_uid": version.device_uid,
        }
    if match := FOREIGN_RESULT.match(result_id):
        return await _foreign_algorithm(archive, study_uid, match.group(1))
    raise HTTPException(422, "result_id names no AI result.")


async def _foreign_algorithm(archive: Archive, study_uid: str, sop_uid: str) -> dict[str, str | None]:
    found = await archive.find_instance(study_uid, sop_uid)
    if found is None:
        raise HTTPException(404, "No such AI result in this study.")
    dataset = await cached_instance(archive, study_uid, str(found.SeriesInstanceUID), sop_uid)
    algorithm = algorithm_info(dataset)
    return {
        "model_id": algorithm.name,
        "model_version": algorithm.version,
        "device_uid": algorithm.device_uid,
    }


def _finding_label(db: Session, result_id: str | None, finding_id: str | None) -> str | None:
    """The label of one of this platform's findings, which must belong to the result named beside it."""
    result = PLATFORM_RESULT.match(result_id or "")
    finding = PLATFORM_FINDING.match(finding_id or "")
    if result is None or finding is None:
        return None
    query = select(Finding.display_name).where(
        Finding.id == int(finding.group(1)), Finding.result_id == int(result.group(1))
    )
    label = db.scalar(query)
    if label is None:
        raise HTTPException(404, "No such finding in this AI result.")
    return label
