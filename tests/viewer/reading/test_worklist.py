"""The worklist as a reader sees it: urgent first then oldest first, the AI's status and flag for every
study, read status, filters, and never a shadow model's result. Real Orthanc, real database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference import catalog
from inference.catalog import Mode, ModelVersion, catalog_transaction
from inference.jobs import JobState
from inference.router import UnroutedSeries
from openaim.audit import AuditEvent
from openaim.db import transaction
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import Image2D, add_job, add_result, install_model, store_chest_image
from tests.viewer.study_index_fixtures import index_studies
from viewer.access.users import find_user
from viewer.reading.reads import Impression, record_impression

HTMX = {"HX-Request": "true"}
PATIENT = "WL-TEST"  # every study of this module, so that other tests' studies can be left out


@pytest.fixture
def ward(
    orthanc: OrthancConnection,
    shared_data: Path,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> dict[str, Image2D]:
    """Six chest studies, one per situation a worklist must tell apart (dates: oldest is 'routine')."""
    images = {
        name: store_chest_image(
            orthanc, shared_data, study_date=date, patient_id=f"{PATIENT}-{tmp_path.name}"
        )
        for name, date in [
            ("routine", "20240101"),
            ("shadow_only", "20240102"),
            ("waiting", "20240103"),
            ("failed", "20240104"),
            ("no_model", "20240105"),
            ("urgent", "20240106"),
        ]
    }
    index_studies(orthanc, db, *(image.study_uid for image in images.values()))
    clinical = install_model(db, settings, tmp_path / "clinical", Mode.CLINICAL, number=1)
    shadow = install_model(db, settings, tmp_path / "shadow", Mode.SHADOW, number=2)
    add_result(db, images["routine"], clinical, "routine", {"Effusion": 0.1, "Pneumothorax": 0.1})
    add_result(db, images["urgent"], clinical, "urgent", {"Effusion": 0.2, "Pneumothorax": 0.9})
    add_result(db, images["shadow_only"], shadow, "urgent", {"Effusion": 0.9, "Pneumothorax": 0.9})
    add_job(db, images["failed"], clinical, JobState.FAILED)
    with transaction(db) as session:
        session.add(
            UnroutedSeries(
                series_uid=images["no_model"].series_uid, study_uid=images["no_model"].study_uid, reason="CT"
            )
        )
    return images


def _rows(client: TestClient, ward: dict[str, Image2D], **params: str) -> list[tuple[str, str, str, str]]:
    """(situation, flag, AI status, read status) per row of this test's studies, in the page's order."""
    names = {image.study_uid: name for name, image in ward.items()}
    html = client.get("/worklist", params=params, headers=HTMX).text
    rows = []
    for row in re.findall(r'<tr class="worklist-row.*?</tr>', html, flags=re.S):
        uid = re.search(r'data-study-uid="([^"]+)"', row).group(1)  # type: ignore[union-attr]
        if uid not in names:
            continue
        flag = re.search(r'data-testid="flag">([^<]+)<', row)
        ai = re.search(r'data-testid="ai-status">([^<]+)<', row).group(1)  # type: ignore[union-attr]
        read = re.sub(r"<[^>]+>", "", re.search(r'data-testid="read-status">(.*?)</td>', row, re.S).group(1))  # type: ignore[union-attr]
        rows.append((names[uid], flag.group(1) if flag else "", ai, read.strip()))
    return rows


def test_urgent_first_then_oldest_first_with_status_of_every_study(
    radiologist: TestClient, ward: dict[str, Image2D]
) -> None:
    assert _rows(radiologist, ward) == [
        ("urgent", "urgent", "done", "unread"),
        ("routine", "routine", "done", "unread"),
        ("shadow_only", "", "not applicable", "unread"),  # the shadow model's urgent flag stays hidden
        ("waiting", "", "waiting", "unread"),
        ("failed", "", "failed", "unread"),
        ("no_model", "", "not applicable", "unread"),
    ]


def test_filters_by_flag_status_read_and_date(
    radiologist: TestClient, ward: dict[str, Image2D], db: sessionmaker[Session]
) -> None:
    with transaction(db) as session:
        user = find_user(session, "radiologist")
        assert user is not None
        record_impression(session, user, ward["routine"].study_uid, Impression.NORMAL, ai_visible=True)
    assert [row[0] for row in _rows(radiologist, ward, flag="urgent")] == ["urgent"]
    assert [row[0] for row in _rows(radiologist, ward, ai="failed")] == ["failed"]
    assert [row[0] for row in _rows(radiologist, ward, read="true")] == ["routine"]
    assert "routine" not in [row[0] for row in _rows(radiologist, ward, read="false")]
    dated = _rows(radiologist, ward, date_from="2024-01-03", date_to="2024-01-04")
    assert [row[0] for row in dated] == ["waiting", "failed"]


def test_search_finds_a_study_by_patient_id_or_accession(
    radiologist: TestClient,
    ward: dict[str, Image2D],
    orthanc: OrthancConnection,
    shared_data: Path,
    db: sessionmaker[Session],
) -> None:
    accession_only = store_chest_image(orthanc, shared_data, "20240107", "SOMEONE-ELSE", accession="ACC-WL-1")
    index_studies(orthanc, db, accession_only.study_uid)
    by_accession = radiologist.get("/worklist", params={"q": "ACC-WL-1"}, headers=HTMX).text
    assert accession_only.study_uid in by_accession
    assert ward["urgent"].study_uid not in by_accession
    by_patient = radiologist.get("/worklist", params={"q": "SOMEONE-ELSE"}, headers=HTMX).text
    assert accession_only.study_uid in by_patient


def test_refresh_polls_are_not_audited_as_new_queries(
    radiologist: TestClient, ward: dict[str, Image2D], db: sessionmaker[Session]
) -> None:
    def queries() -> int:
        with db() as session:
            return len(session.scalars(select(AuditEvent).where(AuditEvent.event_type == "Query")).all())

    before = queries()
    radiologist.get("/worklist", headers={**HTMX, "HX-Trigger": "worklist-rows"})
    assert queries() == before
    radiologist.get("/worklist", params={"flag": "urgent"}, headers=HTMX)
    assert queries() == before + 1


def test_page_polls_itself_and_loads_keyboard_navigation(
    radiologist: TestClient, ward: dict[str, Image2D]
) -> None:
    page = radiologist.get("/worklist").text
    body = re.search(r'<tbody id="worklist-rows"[^>]*>', page)
    assert body is not None and 'hx-trigger="every' in body.group(0)
    assert '<script src="/static/reading/worklist.js" type="module"></script>' in page
    assert radiologist.get("/static/reading/worklist.js").status_code == 200


def test_the_filter_forms_blank_fields_mean_any(radiologist: TestClient, ward: dict[str, Image2D]) -> None:
    blank = {"q": "", "modality": "", "date_from": "", "date_to": "", "flag": "", "ai": "", "read": ""}
    assert [row[0] for row in _rows(radiologist, ward, **blank)] == [
        row[0] for row in _rows(radiologist, ward)
    ]


def test_bad_filter_values_are_refused(radiologist: TestClient) -> None:
    for params in ({"flag": "very-urgent"}, {"ai": "maybe"}, {"date_from": "yesterday"}, {"modality": "<b>"}):
        assert radiologist.get("/worklist", params=params, headers=HTMX).status_code == 422


def test_a_shadow_version_made_clinical_brings_its_flags_to_the_worklist(
    radiologist: TestClient, ward: dict[str, Image2D], db: sessionmaker[Session]
) -> None:
    with db() as session:
        shadow = session.scalars(select(ModelVersion).where(ModelVersion.mode == Mode.SHADOW.value)).one()
    assert ("shadow_only", "", "not applicable", "unread") in _rows(radiologist, ward)
    with catalog_transaction(db) as session:
        catalog.set_mode(session, shadow.model_id, shadow.version, Mode.CLINICAL, "cli:test")
    assert ("shadow_only", "urgent", "done", "unread") in _rows(radiologist, ward, flag="urgent")
