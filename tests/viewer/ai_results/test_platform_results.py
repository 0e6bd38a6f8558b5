"""The AI panel names what of our result is really in the archive: 'TID 1500 SR + SEG' only once the job
stored them; a job that failed to store them says so, with its reason, instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from inference.catalog import Mode
from inference.jobs import Job, JobState
from openaim.db import transaction
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import Image2D, add_result, install_model, store_chest_image

REASON = "the SR could not be built: AttributeError: 'Dataset' object has no attribute 'ImagerPixelSpacing'"


@pytest.fixture
def study(
    orthanc: OrthancConnection,
    shared_data: Path,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> Image2D:
    image = store_chest_image(orthanc, shared_data, "20250302", patient_id="AI-ARCHIVE-RECORD")
    version = install_model(db, settings, tmp_path / "clinical", Mode.CLINICAL)
    add_result(db, image, version, "priority", {"Effusion": 0.25, "Pneumothorax": 0.81})
    return image


def _set_job(db: sessionmaker[Session], image: Image2D, state: JobState, reason: str | None) -> None:
    with transaction(db) as session:
        session.execute(
            update(Job).where(Job.series_uid == image.series_uid).values(state=state.value, reason=reason)
        )


def _panel(client: TestClient, image: Image2D) -> str:
    response = client.get(f"/studies/{image.study_uid}/ai", headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.text


def test_a_failed_result_says_its_sr_and_seg_are_missing_and_why(
    radiologist: TestClient, study: Image2D, db: sessionmaker[Session]
) -> None:
    stored = _panel(radiologist, study)
    assert "TID 1500 SR + SEG" in stored and 'data-testid="result-problem"' not in stored

    _set_job(db, study, JobState.FAILED, REASON)
    html = _panel(radiologist, study)

    assert "TID 1500 SR" not in html
    assert "no SR or SEG in the archive" in html
    assert "Its SR and SEG are not in the archive: the SR could not be built: AttributeError" in html
    assert "ImagerPixelSpacing" in html  # the reason, escaped as any text
    assert 'data-testid="result-problem"' in html


def test_a_result_still_being_written_does_not_claim_the_archive_holds_it(
    radiologist: TestClient, study: Image2D, db: sessionmaker[Session]
) -> None:
    _set_job(db, study, JobState.RUNNING, None)
    html = _panel(radiologist, study)
    assert "TID 1500 SR" not in html
    assert "SR and SEG not stored yet" in html
