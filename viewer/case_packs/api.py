"""Case packs for teaching and development: a reviewer picks studies and downloads them de-identified
(PS3.15 Annex E, see ``viewer.case_packs.build``) as one ZIP.

Each pack gets a fresh random secret, so its UIDs, identifiers and date shift cannot be linked to
another pack or back to the archive. Every study exported is audited (Export, PS3.15 A.5.3.5) by its
UID only: the trail names what left, never who it was about.
"""

from __future__ import annotations

import secrets
from typing import Annotated

import pydicom
from fastapi import APIRouter, Body, HTTPException
from fastapi.responses import Response
from pydantic import Field
from pydicom import Dataset
from starlette.concurrency import run_in_threadpool

from openaim import audit
from openaim.uids import UID_PATTERN
from viewer.access.deps import ArchiveClient, Audit, AuditTrail, DbSession, Reviewer
from viewer.archive.client import Archive
from viewer.case_packs.build import CasePackError, attribution_for, build_case_pack
from viewer.review.meetings import MeetingId, meeting_or_404

router = APIRouter()

MAX_STUDIES = 50
MAX_INSTANCES = 2000  # the pack is built in memory
Uid = Annotated[str, Field(pattern=UID_PATTERN, max_length=64)]
StudyList = Annotated[list[Uid], Body(min_length=1, max_length=MAX_STUDIES)]


async def _study_datasets(archive: Archive, study_uid: str) -> list[Dataset]:
    found = await archive.search_study_instances(study_uid)
    if not found:
        raise HTTPException(404, f"Study {study_uid} is not in the archive.")
    if len(found) > MAX_INSTANCES:
        raise HTTPException(413, f"A pack holds at most {MAX_INSTANCES} instances.")
    datasets: list[Dataset] = []
    for item in found:
        data = await archive.retrieve_instance(study_uid, item.SeriesInstanceUID, item.SOPInstanceUID)
        datasets.append(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)))
    return datasets


@router.post("/api/case-packs")
async def create_case_pack(
    study_uids: StudyList, _: Reviewer, archive: ArchiveClient, trail: Audit
) -> Response:
    """The studies de-identified, as a ZIP download."""
    return await case_pack(archive, list(dict.fromkeys(study_uids)), trail, "case-pack.zip")


@router.post("/review/meetings/{meeting_id}/case-pack")
async def meeting_case_pack(
    meeting_id: MeetingId, _: Reviewer, db: DbSession, archive: ArchiveClient, trail: Audit
) -> Response:
    """The meeting's cases as a teaching pack: the same cases, de-identified, in the meeting's order."""
    meeting = meeting_or_404(db, meeting_id)
    studies = [case.study_uid for case in sorted(meeting.cases, key=lambda case: case.position)]
    if not studies:
        raise HTTPException(409, "This meeting has no cases.")
    return await case_pack(archive, studies[:MAX_STUDIES], trail, f"meeting-{meeting_id}-case-pack.zip")


async def case_pack(archive: Archive, studies: list[str], trail: AuditTrail, filename: str) -> Response:
    datasets: list[Dataset] = []
    for study_uid in studies:
        datasets += await _study_datasets(archive, study_uid)
        if len(datasets) > MAX_INSTANCES:
            raise HTTPException(413, f"A pack holds at most {MAX_INSTANCES} instances.")
    try:
        pack = await run_in_threadpool(
            build_case_pack, datasets, secrets.token_hex(32), attribution_for(datasets)
        )
    except CasePackError as error:
        raise HTTPException(422, f"No case pack: {error}.") from error
    for study_uid in studies:
        trail.record(
            audit.EventType.EXPORT,
            action=audit.Action.READ,
            object_uid=study_uid,
            detail={"purpose": "de-identified case pack", "studies_in_pack": len(studies)},
        )
    return Response(
        pack,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
