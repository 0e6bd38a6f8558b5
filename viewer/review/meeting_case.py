"""One case as a review meeting sees it: anonymised images with the AI's marks, the AI's findings, and each
reader's feedback beside them.

Anonymised means the page carries nothing that names the patient: no name, ID, accession, birth or study
date, and no UID either (images are addressed by meeting, case number and position). The pixels are drawn
by the platform (viewer/reading/pictures.py), so nothing of the header is drawn on them (text burned into the
pixels by the modality is not removed). Readers appear as "Reader 1", "Reader 2": a discrepancy meeting is
for learning, not for blame. Free text a reader typed has the patient's identifiers removed
(viewer/review/anonymise.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset
from sqlalchemy.orm import Session

from viewer.ai_results.view import Overlay, ResultView
from viewer.archive.client import Archive
from viewer.feedback import records
from viewer.feedback.records import reasons_of
from viewer.reading.images import slice_place
from viewer.reading.study import NON_IMAGE_MODALITIES, middle_images
from viewer.review.anonymise import identifiers_of, scrub

MAX_IMAGES = 4


@dataclass(frozen=True)
class CaseImage:
    series_uid: str
    instance_uid: str
    columns: int
    rows: int
    overlays: tuple[Overlay, ...] = ()


@dataclass(frozen=True)
class Opinion:
    """One current feedback row of one reader, without the reader's name."""

    kind: str
    finding: str
    model: str
    verdict: str
    reasons: tuple[str, ...]
    triage_correct: bool | None
    comment: str


@dataclass(frozen=True)
class ReaderColumn:
    label: str  # "Reader 1"
    opinions: tuple[Opinion, ...]


async def case_images(archive: Archive, study_uid: str, results: list[ResultView]) -> list[CaseImage]:
    """The images the AI results are about first, then the middle image of each other image series."""
    series = await archive.search_series(study_uid)
    image_series = {
        str(item.SeriesInstanceUID)
        for item in series
        if str(item.get("Modality", "")) not in NON_IMAGE_MODALITIES
    }
    instances = [
        item
        for item in await archive.search_study_instances(study_uid)
        if item.get("Rows") and item.get("Columns")
    ]
    by_uid = {str(item.SOPInstanceUID): item for item in instances}
    wanted = [
        finding.instance_uid
        for result in results
        for finding in result.findings
        if finding.instance_uid in by_uid
    ]
    middles = middle_images(
        (str(item.SeriesInstanceUID), slice_place(item))
        for item in instances
        if str(item.SeriesInstanceUID) in image_series
    )
    wanted += list(middles.values())
    chosen = list(dict.fromkeys(uid for uid in wanted if uid))[:MAX_IMAGES]
    return [_image(by_uid[uid], results) for uid in chosen]


def _image(instance: Dataset, results: list[ResultView]) -> CaseImage:
    uid = str(instance.SOPInstanceUID)
    overlays = tuple(
        overlay
        for result in results
        for finding in result.findings
        for overlay in finding.overlays
        if overlay.instance_uid == uid and overlay.kind in ("box", "heatmap") and overlay.frame == 1
    )
    columns, rows = int(instance.Columns), int(instance.Rows)
    return CaseImage(str(instance.SeriesInstanceUID), uid, columns, rows, overlays)


def reader_columns(db: Session, study_uid: str, study: Dataset | None) -> list[ReaderColumn]:
    """Every reader's current feedback on the study, readers numbered in the order they first gave it."""
    identifiers = identifiers_of(study) if study is not None else []
    by_reader: dict[int, list[Opinion]] = {}
    for row in sorted(records.current(db, study_uid), key=lambda item: item.id):
        by_reader.setdefault(row.user_id, []).append(
            Opinion(
                kind=row.kind,
                finding=row.finding_label or "",
                model=" ".join(part for part in (row.model_id, row.model_version) if part),
                verdict=row.verdict or "",
                reasons=reasons_of(row),
                triage_correct=row.triage_correct,
                comment=scrub(row.comment or "", identifiers),
            )
        )
    return [
        ReaderColumn(f"Reader {number}", tuple(opinions))
        for number, opinions in enumerate(by_reader.values(), start=1)
    ]
