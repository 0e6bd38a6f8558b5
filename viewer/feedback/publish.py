"""Publishing a reader's feedback on a study to the archive as a DICOM SR (viewer/feedback/sr.py), so
that the accept / reject record survives outside this platform. The AI panel calls it when the reader
presses "Done"; publishing the same state again stores nothing new.

Everything the SR says is read here, on the server: the reader's current feedback and impression from the
database, and the AI result SRs and marked images from Orthanc (the SR copies their finding codes and
tracking UIDs, and takes the patient and study attributes from them).
"""

from __future__ import annotations

import io
import re
from datetime import datetime
from typing import Any

import pydicom
from fastapi import APIRouter, HTTPException
from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.dicom_results.coding import finding_code
from inference.jobs import Job, JobState
from inference.results import Finding, InferenceResult
from openaim import audit
from viewer.access.deps import ArchiveClient, Audit, DbSession, Reader
from viewer.access.users import User
from viewer.ai_results.foreign_results import UNKNOWN, algorithm_info
from viewer.ai_results.foreign_sr import Group, UnsupportedObjectError, measurement_report
from viewer.ai_results.platform_results import clinical_results
from viewer.archive.client import Archive, ArchiveError
from viewer.archive.uids import StudyUID
from viewer.feedback import records
from viewer.feedback.records import Feedback, Kind, Reason, Verdict
from viewer.feedback.sr import (
    FindingAssessment,
    JudgedAlgorithm,
    Mark,
    MissedFinding,
    Placement,
    StudyAssessment,
    build_feedback_sr,
    feedback_uids,
)
from viewer.reading.archived_study import ArchivedStudy
from viewer.reading.reads import Impression, StudyRead, impressions_of

router = APIRouter(prefix="/api/studies/{study_uid}/feedback/sr")

PLATFORM_RESULT = re.compile(r"^platform-(\d+)$")
PLATFORM_FINDING = re.compile(r"^finding-(\d+)$")
FOREIGN_RESULT = re.compile(r"^foreign-([0-9.]{1,64})$")
FOREIGN_GROUP = re.compile(
    r"-group-(\d+)$"
)  # viewer/ai_results/foreign_sr.py numbers a foreign SR's groups from 1


class _Sources:
    """The AI SRs and image attributes of one study, each fetched from the archive once."""

    def __init__(self, archive: Archive, study_uid: str) -> None:
        self.archive = archive
        self.study_uid = study_uid
        self._instances: dict[tuple[str, bool], Dataset] = {}

    async def sr(self, sop_uid: str) -> Dataset:
        return await self._fetch(sop_uid, whole=True)

    async def image(self, sop_uid: str) -> Dataset:
        return await self._fetch(sop_uid, whole=False)

    async def _fetch(self, sop_uid: str, whole: bool) -> Dataset:
        """The instance as stored (an SR), or its attributes without pixel data (an image)."""
        if (sop_uid, whole) in self._instances:
            return self._instances[sop_uid, whole]
        found = await self.archive.find_instance(self.study_uid, sop_uid)
        if found is None:
            raise HTTPException(409, f"Instance {sop_uid} is not in this study's archive.")
        series_uid = str(found.SeriesInstanceUID)
        dataset: Dataset | None
        if whole:
            data = await self.archive.retrieve_instance(self.study_uid, series_uid, sop_uid)
            dataset = pydicom.dcmread(io.BytesIO(data))
        else:
            dataset = await self.archive.instance_metadata(self.study_uid, series_uid, sop_uid)
            if dataset is None:
                raise HTTPException(409, f"Instance {sop_uid} is not in this study's archive.")
        self._instances[sop_uid, whole] = dataset
        return dataset


@router.post("")
async def publish_feedback_sr(
    study_uid: StudyUID,
    user: Reader,
    _archived: ArchivedStudy,
    db: DbSession,
    archive: ArchiveClient,
    trail: Audit,
) -> dict[str, Any]:
    """Store the reader's current feedback on the study in the archive as one SR; answer its UIDs."""
    rows = records.current(db, study_uid, user)
    if not rows:
        raise HTTPException(409, "You have no feedback on this study to publish.")
    impressions = impressions_of(db, user, study_uid)
    sources = _Sources(archive, study_uid)
    try:
        findings = [await _assessment(db, sources, row) for row in rows if row.kind == Kind.FINDING]
        missed = [
            MissedFinding(await _mark(sources, row.mark), row.comment)
            for row in rows
            if row.kind == Kind.MISSED and row.mark
        ]
        study = await _study(db, sources, rows, impressions)
        dataset = build_feedback_sr(
            user.display_name, findings, missed, study, _placement(user, study_uid, rows, impressions)
        )
        answer = await archive.store_instance(_encoded(dataset))
    except ArchiveError as error:
        raise HTTPException(502, str(error)) from error
    except ValueError as error:  # an unreadable AI SR, a mark off the image's frames, nothing to reference
        raise HTTPException(409, f"The feedback cannot be written as DICOM: {error}") from error
    if answer.status_code != 200:
        raise HTTPException(502, f"The archive refused the feedback SR: {answer.status_code}")
    already = answer.json().get("Status") == "AlreadyStored"
    published = {
        "sop_instance_uid": str(dataset.SOPInstanceUID),
        "series_uid": str(dataset.SeriesInstanceUID),
        "findings": len(findings),
        "missed": len(missed),
        "already_stored": already,
    }
    trail.record(
        audit.EventType.INSTANCES_TRANSFERRED,
        action=audit.Action.CREATE,
        object_uid=study_uid,
        detail={"feedback_sr": published["sop_instance_uid"], "already_stored": already},
    )
    return published


async def _assessment(db: Session, sources: _Sources, row: Feedback) -> FindingAssessment:
    """One verdict, with the finding's code and tracking UID as the judged AI SR has them."""
    sr = await sources.sr(_result_sr_uid(db, sources.study_uid, row.result_id))
    group = _judged_group(db, sr, row.finding_id)
    name = row.finding_label or "AI finding"
    finding_type = group.finding_type if group and group.finding_type else finding_code(name, name, None)
    return FindingAssessment(
        result_sr=sr,
        label=str(group.tracking_identifier) if group and group.tracking_identifier else name,
        finding_type=finding_type,
        tracking_uid=group.tracking_uid if group else None,
        verdict=Verdict(row.verdict or Verdict.UNSURE),  # the API refuses a finding row without one
        reason=Reason(row.reason) if row.reason else None,
        comment=row.comment,
        algorithm=_judged_algorithm(sr, row),
        location=await _mark(sources, row.mark) if row.mark else None,
    )


def _judged_algorithm(sr: Dataset, row: Feedback) -> JudgedAlgorithm:
    """The version and device UID recorded with the feedback; the name as the AI SR gives it (the row
    keeps this platform's catalog slug there, not the algorithm's name)."""
    named = algorithm_info(sr)
    return JudgedAlgorithm(
        name=named.name if named.name != UNKNOWN else row.model_id,
        version=row.model_version or named.version,
        device_uid=row.device_uid or named.device_uid,
    )


def _result_sr_uid(db: Session, study_uid: str, result_id: str | None) -> str:
    if result_id and (match := PLATFORM_RESULT.match(result_id)):
        query = (
            select(InferenceResult.sr_uid, Job.state, Job.reason)
            .join(Job, Job.id == InferenceResult.job_id)
            .where(InferenceResult.id == int(match.group(1)), InferenceResult.study_uid == study_uid)
        )
        if (found := db.execute(query).first()) is not None:
            sr_uid, state, reason = found
            if state == JobState.FAILED:  # the row was saved, but its SR never reached the archive
                raise ValueError(
                    f"the AI result's SR was never stored in the archive ({reason or 'its job failed'}). "
                    "Your verdicts are saved here; they can be published once the result is written"
                )
            return str(sr_uid)
    if result_id and (match := FOREIGN_RESULT.match(result_id)):
        return match.group(1)
    raise ValueError(f"the AI result {result_id} is gone")


def _judged_group(db: Session, sr: Dataset, finding_id: str | None) -> Group | None:
    """The AI SR's measurement group the verdict is about, or None when it cannot be told.

    This platform's SR tracks each finding under its output label; another vendor's finding is the
    n-th group in the order viewer/ai_results/foreign_sr.py lists them.
    """
    try:
        report = measurement_report(sr)
    except UnsupportedObjectError:
        return None
    groups: list[Group] = [
        *report.get_image_measurement_groups(),
        *report.get_planar_roi_measurement_groups(),
        *report.get_volumetric_roi_measurement_groups(),
    ]
    if finding_id and (match := PLATFORM_FINDING.match(finding_id)):
        label = db.scalar(select(Finding.label).where(Finding.id == int(match.group(1))))
        return next((group for group in groups if group.tracking_identifier == label), None)
    if finding_id and (match := FOREIGN_GROUP.search(finding_id)):
        index = int(match.group(1))
        return groups[index - 1] if 1 <= index <= len(groups) else None
    return None


async def _mark(sources: _Sources, mark: dict[str, Any] | None) -> Mark:
    if mark is None:
        raise ValueError("a missed finding without its box")
    x0, y0, x1, y1 = (float(value) for value in mark["box"])
    image = await sources.image(str(mark["instance_uid"]))
    return Mark(image=image, frame=int(mark.get("frame", 1)), box=(x0, y0, x1, y1))


async def _study(
    db: Session, sources: _Sources, rows: list[Feedback], impressions: list[StudyRead]
) -> StudyAssessment | None:
    """The study-level answers; the triage judged is that of the study's clinical results."""
    row = next((row for row in rows if row.kind == Kind.STUDY), None)
    if row is None and not impressions:
        return None
    srs = []
    if row is not None:
        srs = [await sources.sr(result.sr_uid) for result, _ in clinical_results(db, sources.study_uid)]
    return StudyAssessment(
        triage_correct=row.triage_correct if row else None,
        review_requested=row.review_requested if row else None,
        comment=row.comment if row else None,
        impression=Impression(impressions[-1].impression) if impressions else None,
        result_srs=srs,
    )


def _placement(user: User, study_uid: str, rows: list[Feedback], impressions: list[StudyRead]) -> Placement:
    """UIDs from the state published, an instance number that grows with every save, and the time of the
    newest save (local time, as DICOM dates are) as the content time."""
    versions = [(row.target, row.version) for row in rows]
    if impressions:
        versions.append(("impression", impressions[-1].id))
    sop_uid, series_uid = feedback_uids(user.id, study_uid, versions)
    times: list[datetime] = [row.created_at for row in rows] + [read.created_at for read in impressions]
    return Placement(
        sop_instance_uid=sop_uid,
        series_instance_uid=series_uid,
        instance_number=sum(row.version for row in rows) + len(impressions),
        content_datetime=max(times).astimezone().replace(tzinfo=None),
    )


def _encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
