"""Feedback, impressions and reads are about studies the archive holds: a UID it does not hold gets 404
with the reason and leaves nothing behind. The study index answers first; Orthanc when the index lags."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from inference.study_index import IndexedStudy
from openaim.db import transaction
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import store_chest_image
from viewer.archive.client import Archive
from viewer.feedback.records import Feedback
from viewer.reading.archived_study import archived_study
from viewer.reading.reads import StudyRead

GHOST = "1.2.826.0.1.3680043.10.999.404"  # well formed; no archive holds it
STUDY_FEEDBACK = {"kind": "study", "triage_correct": False, "review_requested": True}


def _count(db: sessionmaker[Session], table: type[Feedback] | type[StudyRead]) -> int:
    with db() as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def test_feedback_for_a_study_not_in_the_archive_is_refused(
    radiologist: TestClient, db: sessionmaker[Session]
) -> None:
    body = {"client_id": str(uuid.uuid4())} | STUDY_FEEDBACK
    response = radiologist.post(f"/api/studies/{GHOST}/feedback", json=body)
    assert response.status_code == 404
    assert response.json() == {"detail": f"Study {GHOST} is not in the archive."}
    assert _count(db, Feedback) == 0


def test_an_impression_or_done_for_a_study_not_in_the_archive_is_refused(
    radiologist: TestClient, db: sessionmaker[Session]
) -> None:
    impression = radiologist.post(f"/studies/{GHOST}/impression", data={"impression": "abnormal"})
    done = radiologist.post(f"/api/studies/{GHOST}/done")
    assert (impression.status_code, done.status_code) == (404, 404)
    assert "not in the archive" in done.json()["detail"]
    assert _count(db, StudyRead) == 0


def test_publishing_feedback_for_a_study_not_in_the_archive_is_refused(radiologist: TestClient) -> None:
    """Storing the feedback SR would have made the ghost study real in the archive."""
    assert radiologist.post(f"/api/studies/{GHOST}/feedback/sr").status_code == 404


def test_a_study_just_stored_is_accepted_before_the_index_has_it(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path, db: sessionmaker[Session]
) -> None:
    image = store_chest_image(orthanc, shared_data, "20250502", patient_id="GHOST-LAG")
    with db() as session:
        assert session.scalar(select(IndexedStudy).where(IndexedStudy.study_uid == image.study_uid)) is None
    body = {"client_id": str(uuid.uuid4())} | STUDY_FEEDBACK
    assert radiologist.post(f"/api/studies/{image.study_uid}/feedback", json=body).status_code == 201
    assert radiologist.post(f"/api/studies/{image.study_uid}/done").status_code == 200


class UnreachableArchive(Archive):
    def __init__(self) -> None:  # no connection: any question to Orthanc fails the test
        pass

    async def find_study(self, study_uid: str) -> None:
        raise AssertionError("the index holds the study: Orthanc must not be asked")


def test_the_study_index_answers_without_asking_orthanc(db: sessionmaker[Session]) -> None:
    indexed = "1.2.826.0.1.3680043.10.999.1"
    with transaction(db) as session:
        session.add(IndexedStudy(orthanc_id="indexed-study", study_uid=indexed))
    with db() as session:
        assert asyncio.run(archived_study(indexed, session, UnreachableArchive())) == indexed
        with pytest.raises(AssertionError, match="must not be asked"):
            asyncio.run(archived_study(GHOST, session, UnreachableArchive()))


def test_without_the_index_orthanc_decides(db: sessionmaker[Session], orthanc: OrthancConnection) -> None:
    async def ask() -> None:
        archive = Archive(orthanc)
        try:
            with db() as session:
                await archived_study(GHOST, session, archive)
        finally:
            await archive.aclose()

    with pytest.raises(HTTPException) as refused:
        asyncio.run(ask())
    assert refused.value.status_code == 404
