"""Done on the AI panel reads the study and answers the next unread study in worklist order (urgent first,
then the one waiting longest), from the study index over a real Orthanc and a real database."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from inference.catalog import Mode
from inference.study_index import IndexedStudy
from openaim.audit import AuditEvent
from openaim.db import transaction
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import Image2D, add_result, install_model, store_chest_image
from tests.viewer.conftest import sign_in
from tests.viewer.study_index_fixtures import index_studies
from viewer.access.users import User
from viewer.reading.reads import Impression, StudyRead, impressions_of, record_impression


@pytest.fixture
def three(orthanc: OrthancConnection, shared_data: Path, db: sessionmaker[Session]) -> dict[str, Image2D]:
    """Three unread studies in the index: oldest first, unless one is flagged."""
    studies = {
        name: store_chest_image(orthanc, shared_data, date, patient_id=f"NEXT-{name.upper()}")
        for name, date in (("old", "20240101"), ("middle", "20240102"), ("new", "20240103"))
    }
    index_studies(orthanc, db, *(image.study_uid for image in studies.values()))
    return studies


def _done(client: TestClient, image: Image2D) -> str | None:
    response = client.post(f"/api/studies/{image.study_uid}/done")
    assert response.status_code == 200, response.text
    found = response.json()["next"]
    if found is None:
        return None
    assert found["url"] == f"/studies/{found['study_uid']}"
    return str(found["patient_id"])


def _read(db: sessionmaker[Session]) -> dict[str, bool]:
    with db() as session:
        return {row.patient_id: row.was_read for row in session.scalars(select(IndexedStudy))}


def test_done_reads_the_study_and_offers_the_next_unread_urgent_first(
    radiologist: TestClient,
    three: dict[str, Image2D],
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> None:
    model = install_model(db, settings, tmp_path / "model", Mode.CLINICAL, number=31)
    add_result(db, three["new"], model, "urgent", {"Effusion": 0.7})  # the newest, but urgent: first

    assert _done(radiologist, three["old"]) == "NEXT-NEW"
    assert _read(db) == {"NEXT-OLD": True, "NEXT-MIDDLE": False, "NEXT-NEW": False}
    assert _done(radiologist, three["new"]) == "NEXT-MIDDLE"
    assert _done(radiologist, three["middle"]) is None  # every study in the index is read
    assert _done(radiologist, three["middle"]) is None  # twice: still one read, nothing else changes

    with db() as session:
        user = session.scalars(select(User).where(User.username == "radiologist")).one()
        rows = session.scalars(select(StudyRead).where(StudyRead.user_id == user.id)).all()
        assert len(rows) == 3 and {row.impression for row in rows} == {""}
        assert impressions_of(session, user, three["old"].study_uid) == []  # Done is no impression
        events = session.scalars(select(AuditEvent).where(AuditEvent.event_type == "StudyImpression")).all()
        assert [event.object_uid for event in events] == [
            three["old"].study_uid,
            three["new"].study_uid,
            three["middle"].study_uid,
        ]


def test_an_impression_already_reads_the_study_and_a_blinded_reader_starts_with_one(
    radiologist: TestClient, three: dict[str, Image2D], db: sessionmaker[Session]
) -> None:
    with transaction(db) as session:
        user = session.scalars(select(User).where(User.username == "radiologist")).one()
        record_impression(session, user, three["old"].study_uid, Impression.NORMAL, ai_visible=True)
    assert _done(radiologist, three["old"]) == "NEXT-MIDDLE"
    with db() as session:
        assert len(session.scalars(select(StudyRead)).all()) == 1  # Done added nothing

    with transaction(db) as session:
        session.execute(update(User).where(User.username == "radiologist").values(blinded_read=True))
    assert radiologist.post(f"/api/studies/{three['middle'].study_uid}/done").status_code == 403
    assert _read(db)["NEXT-MIDDLE"] is False


def test_done_needs_a_reader(client: TestClient, three: dict[str, Image2D]) -> None:
    assert client.post(f"/api/studies/{three['old'].study_uid}/done").status_code in (401, 403)
    sign_in(client, "governance")
    assert client.post(f"/api/studies/{three['old'].study_uid}/done").status_code == 403
