"""Other vendors' SEG and SR found in the real Orthanc, with and without the images they reference, and
their masks served by the viewer's route.

The session's Orthanc is shared and other tests store the same fixture files, so every scenario here is
a copy of the files under a study UID of its own. Images keep their SOP Instance UIDs (the results refer
to them); every SEG and SR copy gets new ones, because Orthanc's WADO-RS cannot retrieve an instance whose
SOP Instance UID is stored in two studies."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from PIL import Image
from pydicom import Dataset
from pydicom.uid import generate_uid

from orthanc import OrthancConnection
from viewer.access.deps import check_csrf, current_user
from viewer.ai_results import foreign_masks
from viewer.ai_results.foreign_results import load_foreign_results
from viewer.ai_results.foreign_seg import SEGMENTATION_STORAGE
from viewer.ai_results.view import ResultView
from viewer.archive.client import Archive

SEGS = (
    "seg_image_cr_binary.dcm",
    "seg_image_ct_binary.dcm",
    "seg_image_ct_binary_overlap.dcm",
    "seg_image_ct_true_fractional.dcm",
)
SRS = ("sr_document.dcm", "sr_document_with_multiple_groups.dcm")
SEG_IMAGES = ("foreign_ai/referenced_cr_16x16", "foreign_ai/referenced_ct_16x16")
SR_IMAGE = "transfer_syntax/pydicom_CT_small.dcm"
OUR_DEVICE = generate_uid()
MISSING = "is not in the archive"


def in_study(path: Path, study_uid: str) -> Dataset:
    """The file as a copy in another study; a SEG or SR also as a new instance in a new series."""
    dataset = pydicom.dcmread(path)
    dataset.StudyInstanceUID = study_uid
    for item in dataset.get("CurrentRequestedProcedureEvidenceSequence") or []:
        item.StudyInstanceUID = study_uid
    if is_result(dataset):
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


def is_result(dataset: Dataset) -> bool:
    return "SegmentSequence" in dataset or "ContentSequence" in dataset


def ours(dataset: Dataset) -> Dataset:
    """A copy that this platform made: its algorithm's Device UID in the Contributing Equipment."""
    equipment = Dataset()
    equipment.Manufacturer = "openaim"
    equipment.DeviceUID = OUR_DEVICE
    dataset.ContributingEquipmentSequence = [equipment]
    return dataset


def to_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def studies(orthanc: OrthancConnection, shared_data: Path) -> dict[str, list[Dataset]]:
    """Study UID -> the datasets stored in it, for four scenarios: SEGs (plus one of ours) with their
    images, SRs with theirs, and each without."""
    dicom = shared_data / "dicom"
    foreign = dicom / "foreign_ai" / "highdicom"
    seg_images = [path for folder in SEG_IMAGES for path in sorted((dicom / folder).glob("*.dcm"))]
    scenarios = {
        "seg": [*seg_images, *(foreign / name for name in SEGS)],
        "sr": [dicom / SR_IMAGE, *(foreign / name for name in SRS)],
        "seg_missing": [foreign / name for name in SEGS],
        "sr_missing": [foreign / name for name in SRS],
    }
    stored: dict[str, list[Dataset]] = {}
    with orthanc.client() as client:
        for scenario, paths in scenarios.items():
            study_uid = generate_uid()
            datasets = [in_study(path, study_uid) for path in paths]
            if scenario == "seg":
                datasets.append(ours(in_study(foreign / SEGS[1], study_uid)))
            for dataset in datasets:
                client.post("/instances", content=to_bytes(dataset)).raise_for_status()
            stored[scenario] = datasets
    return stored


def study_of(studies: dict[str, list[Dataset]], scenario: str) -> str:
    return str(studies[scenario][0].StudyInstanceUID)


def results_of(datasets: list[Dataset]) -> dict[str, Dataset]:
    """The stored SEG and SR objects by SOP Instance UID."""
    return {
        str(ds.SOPInstanceUID): ds for ds in datasets if "SegmentSequence" in ds or "ContentSequence" in ds
    }


def load(orthanc: OrthancConnection, study_uid: str, ignore: Collection[str] = ()) -> list[ResultView]:
    async def run() -> list[ResultView]:
        archive = Archive(orthanc)
        try:
            return await load_foreign_results(archive, study_uid, ignore)
        finally:
            await archive.aclose()

    return asyncio.run(run())


def test_segs_with_their_images_are_shown_with_masks_and_ours_is_skipped(
    orthanc: OrthancConnection, studies: dict[str, list[Dataset]]
) -> None:
    objects = results_of(studies["seg"])
    study_uid = study_of(studies, "seg")
    views = {view.object_uid: view for view in load(orthanc, study_uid, {OUR_DEVICE})}

    ours_uid = next(uid for uid, ds in objects.items() if "ContributingEquipmentSequence" in ds)
    assert set(views) == set(objects) - {ours_uid}
    for uid, view in views.items():
        seg = objects[uid]
        assert (view.kind, view.problems) == ("SEG", ())
        overlays = [overlay for finding in view.findings for overlay in finding.overlays]
        assert len(overlays) == int(seg.NumberOfFrames)
        prefix = f"/api/studies/{study_uid}/foreign/{seg.SeriesInstanceUID}/{uid}/masks/"
        assert sorted(o.image_url or "" for o in overlays) == sorted(
            f"{prefix}{n}.png" for n in range(1, len(overlays) + 1)
        )

    assert ours_uid in {view.object_uid for view in load(orthanc, study_uid, ())}


def test_srs_with_their_image_are_shown_with_their_shapes(
    orthanc: OrthancConnection, studies: dict[str, list[Dataset]]
) -> None:
    objects = results_of(studies["sr"])
    views = load(orthanc, study_of(studies, "sr"), ())

    assert {view.object_uid for view in views} == set(objects)
    for view in views:
        assert (view.kind, view.problems) == ("TID 1500 SR", ())
        assert view.findings and not any(MISSING in finding.note for finding in view.findings)
        assert any(finding.overlays for finding in view.findings)


@pytest.mark.parametrize("scenario", ["seg_missing", "sr_missing"])
def test_results_without_their_images_list_each_missing_image(
    orthanc: OrthancConnection, studies: dict[str, list[Dataset]], scenario: str
) -> None:
    objects = results_of(studies[scenario])
    views = load(orthanc, study_of(studies, scenario), ())

    assert {view.object_uid for view in views} == set(objects)
    for view in views:
        assert view.findings, view.problems
        assert view.missing_images and view.problems == ()
        assert len(set(view.missing_images)) == len(view.missing_images)
        for finding in view.findings:
            assert finding.overlays == ()
            assert "not in the archive" in finding.note  # one image named, or several counted


@pytest.fixture
def masks(radiologist: TestClient) -> TestClient:
    """The signed-in client with the mask route mounted as viewer/app.py mounts the others."""
    radiologist.app.include_router(  # type: ignore[attr-defined]
        foreign_masks.router, dependencies=[Depends(current_user), Depends(check_csrf)]
    )
    return radiologist


def test_mask_route_serves_each_seg_frame_as_the_seg_pixels(
    masks: TestClient, studies: dict[str, list[Dataset]]
) -> None:
    study_uid = study_of(studies, "seg")
    seg = _fractional(studies["seg"])
    base = f"/api/studies/{study_uid}/foreign/{seg.SeriesInstanceUID}/{seg.SOPInstanceUID}/masks"
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    for number, stored in enumerate(frames, start=1):
        response = masks.get(f"{base}/{number}.png")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.headers["cache-control"] == "private, max-age=3600"
        alpha = np.asarray(Image.open(io.BytesIO(response.content)))[..., 3]
        np.testing.assert_array_equal(alpha > 0, stored > 0)

    assert masks.get(f"{base}/{len(frames) + 1}.png").status_code == 404
    assert masks.get(f"{base}/0.png").status_code == 422
    wrong = f"/api/studies/{study_uid}/foreign/{seg.SeriesInstanceUID}/{generate_uid()}/masks/1.png"
    assert masks.get(wrong).status_code == 404
    assert masks.get(base.replace(str(seg.SeriesInstanceUID), "1.2.abc") + "/1.png").status_code == 422
    anonymous = TestClient(masks.app, base_url=str(masks.base_url))
    assert anonymous.get(f"{base}/1.png").status_code == 401


def _fractional(datasets: list[Dataset]) -> Dataset:
    return next(
        ds
        for ds in datasets
        if ds.SOPClassUID == SEGMENTATION_STORAGE and ds.get("SegmentationType") == "FRACTIONAL"
    )
