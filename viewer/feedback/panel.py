"""The AI panel of the study page: every result for the study (this platform's clinical models and other
vendors' SEG/SR in the archive), the reader's impression, and the blinded read that hides the AI until that
impression is given. Every result put in front of a reader is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.catalog import ModelVersion
from openaim import audit
from viewer.access.deps import ArchiveClient, Audit, AuditTrail, DbSession, Reader
from viewer.access.users import User
from viewer.ai_results.foreign_results import load_foreign_results
from viewer.ai_results.platform_results import platform_results
from viewer.ai_results.view import ResultView
from viewer.archive.client import Archive
from viewer.archive.uids import StudyUID
from viewer.feedback import records
from viewer.feedback.records import Kind, Reason
from viewer.reading.archived_study import ArchivedStudy
from viewer.reading.reads import Impression, ai_hidden, impressions_of, record_impression
from viewer.reading.study_status import AIStatus, study_statuses
from viewer.templates import render

router = APIRouter()

DISAGREE_REASONS = {
    Reason.FALSE_POSITIVE_ARTEFACT: "False positive: artefact",
    Reason.FALSE_POSITIVE_NORMAL_VARIANT: "False positive: normal variant",
    Reason.FALSE_POSITIVE_OTHER_FINDING: "False positive: another finding",
    Reason.WRONG_LOCATION: "Wrong location",
}


@router.get("/studies/{study_uid}/ai")
async def ai_panel(
    request: Request, study_uid: StudyUID, user: Reader, db: DbSession, archive: ArchiveClient, trail: Audit
) -> Response:
    return await _panel(request, study_uid, user, db, archive, trail)


@router.post("/studies/{study_uid}/impression")
async def impression(
    request: Request,
    study_uid: StudyUID,
    user: Reader,
    _archived: ArchivedStudy,
    db: DbSession,
    archive: ArchiveClient,
    trail: Audit,
    impression: Annotated[Impression, Form()],
) -> Response:
    ai_visible = not ai_hidden(db, user, study_uid)
    record_impression(db, user, study_uid, impression, ai_visible=ai_visible)
    trail.record(
        audit.EventType.STUDY_IMPRESSION,
        action=audit.Action.CREATE,
        object_uid=study_uid,
        detail={"impression": impression.value, "ai_visible": ai_visible},
    )
    return await _panel(request, study_uid, user, db, archive, trail)


async def _panel(
    request: Request, study_uid: str, user: User, db: Session, archive: Archive, trail: AuditTrail
) -> Response:
    hidden = ai_hidden(db, user, study_uid)
    results = [] if hidden else await _results(db, archive, study_uid)
    for result in results:
        _audit_shown(trail, study_uid, result)
    status = study_statuses(db, [study_uid])[study_uid].ai
    mine = {row.target: row for row in records.current(db, study_uid, user)}
    return render(
        request,
        "feedback/ai_panel.html",
        study_uid=study_uid,
        hidden=hidden,
        results=results,
        impressions=impressions_of(db, user, study_uid),
        mine=mine,
        missed=[row for row in mine.values() if row.kind == Kind.MISSED.value],
        reasons=DISAGREE_REASONS,
        status=status,
        still_working=not hidden and not results and status in (AIStatus.WAITING, AIStatus.RUNNING),
        overlays=[_overlay_json(result) for result in results],
    )


async def _results(db: Session, archive: Archive, study_uid: str) -> list[ResultView]:
    """Ours from the database; every other SEG/SR of the study from the archive (ours are recognised by
    their device UID there, whatever mode their version is in now, so a shadow result never slips in)."""
    own_devices = set(db.scalars(select(ModelVersion.device_uid)))
    return platform_results(db, study_uid) + await load_foreign_results(archive, study_uid, own_devices)


def _overlay_json(result: ResultView) -> list[dict[str, Any]]:
    return [overlay for finding in result.as_json()["findings"] for overlay in finding["overlays"]]


def _audit_shown(trail: AuditTrail, study_uid: str, result: ResultView) -> None:
    trail.record(
        audit.EventType.AI_RESULT_SHOWN,
        action=audit.Action.READ,
        object_uid=study_uid,
        detail={
            "result": result.id,
            "object_uid": result.object_uid,
            "model": result.algorithm.name,
            "version": result.algorithm.version,
            "device_uid": result.algorithm.device_uid,
        },
    )
