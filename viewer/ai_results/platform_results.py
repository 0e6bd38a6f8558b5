"""This platform's own AI results, from the database, in the reading room's shape. Only versions in
clinical mode: a shadow trial's output never reaches a reader."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from inference import catalog
from inference.catalog import Mode, ModelVersion
from inference.jobs import Job, JobState
from inference.results import Finding, InferenceResult
from viewer.ai_results.view import AlgorithmInfo, FindingView, Overlay, ResultView


def clinical_results(db: Session, study_uid: str) -> list[tuple[InferenceResult, ModelVersion]]:
    query = (
        select(InferenceResult, ModelVersion)
        .join(ModelVersion, ModelVersion.id == InferenceResult.model_version_id)
        .where(InferenceResult.study_uid == study_uid, ModelVersion.mode == Mode.CLINICAL.value)
        .order_by(InferenceResult.id)
    )
    return [(result, version) for result, version in db.execute(query)]


def platform_results(db: Session, study_uid: str) -> list[ResultView]:
    results = clinical_results(db, study_uid)
    jobs = _jobs(db, [result.job_id for result, _ in results])
    return [_view(result, version, jobs.get(result.job_id)) for result, version in results]


def _jobs(db: Session, job_ids: list[int]) -> dict[int, Job]:
    return {job.id: job for job in db.scalars(select(Job).where(Job.id.in_(job_ids)))}


def _archive_record(result: InferenceResult, job: Job | None) -> tuple[str, tuple[str, ...]]:
    """What of the result is in the archive, and the problem when it is not there.

    The row is saved as soon as the model has spoken, before its SR and SEG are built and stored, with the
    UIDs they will have; the job is done only once both are stored. So a row alone does not prove the
    archive holds them: the job's state says.
    """
    if job is not None and job.state == JobState.DONE.value:
        return ("TID 1500 SR + SEG" if result.seg_uid else "TID 1500 SR"), ()
    if job is not None and job.state == JobState.FAILED.value:
        reason = job.reason or "no reason recorded"
        return "no SR or SEG in the archive", (f"Its SR and SEG are not in the archive: {reason}",)
    return "SR and SEG not stored yet", ()


def algorithm_of(version: ModelVersion) -> AlgorithmInfo:
    manifest = catalog.manifest_of(version)
    return AlgorithmInfo(
        name=manifest.name,
        version=version.version,
        vendor=manifest.vendor,
        device_uid=version.device_uid,
        regulatory_status=manifest.regulatory.status.value,
        intended_use=manifest.intended_use,
        card_url=f"/models/{version.model_id}/{version.version}",
    )


def _view(result: InferenceResult, version: ModelVersion, job: Job | None) -> ResultView:
    # Positive findings first, most probable first: what the reader must look at leads the list.
    findings = sorted(result.findings, key=lambda finding: (not finding.positive, -finding.probability))
    kind, problems = _archive_record(result, job)
    return ResultView(
        id=f"platform-{result.id}",
        source="platform",
        algorithm=algorithm_of(version),
        series_uid=result.series_uid,
        object_uid=result.sr_uid,
        kind=kind,
        triage=result.triage,
        created=result.created_at.isoformat(timespec="seconds"),
        findings=tuple(_finding(finding, result.sop_instance_uid) for finding in findings),
        problems=problems,
    )


def _finding(finding: Finding, instance_uid: str) -> FindingView:
    return FindingView(
        id=f"finding-{finding.id}",
        label=finding.display_name,
        instance_uid=instance_uid,
        probability=finding.probability,
        threshold=finding.threshold,
        positive=finding.positive,
        overlays=_overlays(finding, instance_uid),
    )


def _overlays(finding: Finding, instance_uid: str) -> tuple[Overlay, ...]:
    overlays = []
    if finding.heatmap_png is not None and finding.heatmap_region:
        x0, y0, x1, y1 = (float(value) for value in finding.heatmap_region.split(","))
        overlays.append(
            Overlay(
                id=f"heatmap-{finding.id}",
                kind="heatmap",
                instance_uid=instance_uid,
                image_url=f"/api/ai/findings/{finding.id}/heatmap.png",
                region=(x0, y0, x1, y1),
                label=finding.display_name,
            )
        )
    for number, (x0, y0, x1, y1) in enumerate(json.loads(finding.boxes_json or "[]"), start=1):
        overlays.append(
            Overlay(
                id=f"box-{finding.id}-{number}",
                kind="box",
                instance_uid=instance_uid,
                rect=(float(x0), float(y0), float(x1), float(y1)),
                label=f"{finding.display_name} {finding.probability:.2f}",
            )
        )
    return tuple(overlays)
