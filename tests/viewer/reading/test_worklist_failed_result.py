"""A triage flag whose result failed (its SR and SEG never reached the archive) is not shown as if valid:
the worklist says the result failed beside it. The flag still sorts the study: the model did raise it."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from inference.catalog import Mode
from inference.jobs import Job, JobState
from openaim.db import transaction
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import add_result, install_model, store_chest_image
from tests.viewer.study_index_fixtures import index_studies


def test_a_flag_from_a_failed_result_says_the_result_failed(
    radiologist: TestClient,
    orthanc: OrthancConnection,
    shared_data: Path,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> None:
    patient = f"WL-FAILED-{tmp_path.name}"
    failed = store_chest_image(orthanc, shared_data, "20240201", patient_id=patient)
    stored = store_chest_image(orthanc, shared_data, "20240202", patient_id=patient)
    index_studies(orthanc, db, failed.study_uid, stored.study_uid)
    version = install_model(db, settings, tmp_path / "clinical", Mode.CLINICAL)
    add_result(db, failed, version, "priority", {"Effusion": 0.2, "Pneumothorax": 0.9})
    add_result(db, stored, version, "priority", {"Effusion": 0.2, "Pneumothorax": 0.9})
    with transaction(db) as session:
        session.execute(
            update(Job).where(Job.series_uid == failed.series_uid).values(state=JobState.FAILED.value)
        )

    html = radiologist.get("/worklist", params={"q": patient}, headers={"HX-Request": "true"}).text
    rows = {
        re.search(r'data-study-uid="([^"]+)"', row).group(1): row  # type: ignore[union-attr]
        for row in re.findall(r'<tr class="worklist-row.*?</tr>', html, flags=re.S)
    }

    assert 'data-testid="flag">priority<' in rows[failed.study_uid]
    assert re.search(r'data-testid="flag-failed"[^>]*>result failed<', rows[failed.study_uid])
    assert 'data-testid="ai-status">failed<' in rows[failed.study_uid]
    assert 'data-testid="flag">priority<' in rows[stored.study_uid]
    assert "flag-failed" not in rows[stored.study_uid]
