"""The admin's model page: a card per installed version (vendor text shown as text), mode changes that need
CSRF and are audited under the admin's name, and the jobs and series that produced no result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference import catalog
from inference.catalog import ModelVersion, catalog_transaction
from inference.jobs import Job, JobState
from inference.router import UnroutedSeries
from openaim.audit import AuditEvent, EventType
from openaim.db import transaction, utcnow
from openaim.settings import Settings
from tests.inference.tiny_model import MODULE, write_tiny_package
from tests.viewer.conftest import sign_in

MODEL = "openaim.tiny-cxr"
HOSTILE_VENDOR = "<script>alert('vendor')</script> Acme"
HTMX = {"HX-Request": "true"}


@pytest.fixture
def installed(db: sessionmaker[Session], settings: Settings, tmp_path: Path) -> None:
    """Two versions of one model, the second with a script tag for a vendor and a cleared status."""
    sources = [
        write_tiny_package(tmp_path / "v1"),
        write_tiny_package(
            tmp_path / "v2",
            seed=2,
            version="1.1.0",
            vendor=HOSTILE_VENDOR,
            device_uid="1.2.826.0.1.3680043.10.1234.2.0",
            regulatory={
                "status": "cleared",
                "authority": "FDA",
                "reference": "K000000",
                "device_class": "II",
                "statement": "Cleared for triage of <b>adult</b> chest radiographs.",
            },
        ),
    ]
    for source in sources:
        with catalog_transaction(db) as session:
            catalog.install(session, source, catalog.packages_dir(settings), "cli:installer", (MODULE,))


def _version(db: sessionmaker[Session], version: str) -> ModelVersion:
    with db() as session:
        found = catalog.get_version(session, MODEL, version)
    assert found is not None
    return found


def _modes(db: sessionmaker[Session]) -> dict[str, str]:
    with db() as session:
        return {version.version: version.mode for version in catalog.list_versions(session)}


def _model_events(db: sessionmaker[Session]) -> list[tuple[str | None, dict[str, object]]]:
    with db() as session:
        events = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.event_type == EventType.AI_MODEL_CHANGED.value)
            .order_by(AuditEvent.id)
        ).all()
        return [(event.username, json.loads(event.detail)) for event in events]


def test_admins_see_a_card_per_version_with_vendor_text_as_text(
    admin: TestClient, installed: None, db: sessionmaker[Session]
) -> None:
    response = admin.get("/admin/models")
    assert response.status_code == 200
    page = response.text
    assert page.count('data-testid="model-card"') == 2
    for expected in (
        "Tiny chest X-ray classifier",
        "1.1.0",
        "Triage of frontal adult chest radiographs for effusion and pneumothorax.",
        "Paediatric patients",
        "Random weights; trained on nothing.",
        "For research use only.",
        "FDA",
        "K000000",
        "class II",
        "AUROC",
        "none (random weights)",
        "Pleural effusion",
        "SCT 60046008",
        "Pneumothorax → ",
        "its threshold (0.3)",
        "Modality: CR, DX",
        "BodyPartExamined: CHEST",
        "1.2.826.0.1.3680043.10.1234.2.0",
        "cli:installer",
        'href="/admin/models">Models</a>',
    ):
        assert expected in page, expected
    assert _version(db, "1.1.0").weights_sha256 in page
    assert "&lt;script&gt;alert(&#39;vendor&#39;)&lt;/script&gt; Acme" in page
    assert "&lt;b&gt;adult&lt;/b&gt;" in page
    assert "<script>alert" not in page and "<b>adult" not in page
    assert page.count('data-testid="mode">off</span>') == 2


def test_only_admins_reach_the_page_or_change_a_mode(
    radiologist: TestClient, installed: None, db: sessionmaker[Session]
) -> None:
    assert radiologist.get("/admin/models").status_code == 403
    response = radiologist.post(f"/admin/models/{MODEL}/mode", data={"version": "1.0.0", "mode": "clinical"})
    assert response.status_code == 403
    assert 'href="/admin/models"' not in radiologist.get("/worklist").text
    assert _modes(db) == {"1.0.0": "off", "1.1.0": "off"}


def test_governance_reads_the_cards_and_changes_nothing(
    client: TestClient, installed: None, db: sessionmaker[Session]
) -> None:
    governance = sign_in(client, "governance")
    assert governance.get("/", follow_redirects=False).headers["location"] == "/admin/models"
    page = governance.get("/admin/models")
    assert page.status_code == 200
    assert page.text.count('data-testid="model-card"') == 2
    assert 'data-testid="make-' not in page.text and "/retire" not in page.text  # no buttons it may not use
    assert 'href="/admin/audit"' in page.text and 'href="/admin/users"' not in page.text
    assert governance.get(f"/models/{MODEL}/1.0.0").status_code == 200
    response = governance.post(f"/admin/models/{MODEL}/mode", data={"version": "1.0.0", "mode": "clinical"})
    assert response.status_code == 403
    assert _modes(db) == {"1.0.0": "off", "1.1.0": "off"}


def test_a_mode_change_without_the_csrf_token_is_refused(
    admin: TestClient, installed: None, db: sessionmaker[Session]
) -> None:
    token = admin.headers.pop("X-CSRF-Token")
    response = admin.post(f"/admin/models/{MODEL}/mode", data={"version": "1.0.0", "mode": "shadow"})
    assert response.status_code == 403
    wrong = admin.post(
        f"/admin/models/{MODEL}/mode", data={"version": "1.0.0", "mode": "shadow", "csrf_token": token[::-1]}
    )
    assert wrong.status_code == 403
    assert _modes(db) == {"1.0.0": "off", "1.1.0": "off"}
    assert len(_model_events(db)) == 2  # the two installs only


def test_htmx_mode_change_swaps_the_cards_and_is_audited_under_the_admin(
    admin: TestClient, installed: None, db: sessionmaker[Session]
) -> None:
    first = admin.post(
        f"/admin/models/{MODEL}/mode", data={"version": "1.0.0", "mode": "clinical"}, headers=HTMX
    )
    assert first.status_code == 200
    assert first.text.lstrip().startswith('<section id="model-cards"')  # the partial, not a whole page
    assert f"{MODEL} 1.0.0: off -&gt; clinical" in first.text

    second = admin.post(
        f"/admin/models/{MODEL}/mode", data={"version": "1.1.0", "mode": "clinical"}, headers=HTMX
    )
    assert f"Demoted {MODEL} 1.0.0 from clinical to shadow" in second.text
    assert second.text.count('data-testid="mode">clinical</span>') == 1
    assert second.text.count('data-testid="mode">shadow</span>') == 1
    assert _modes(db) == {"1.0.0": "shadow", "1.1.0": "clinical"}

    changes = [
        (username, detail["change"], detail["version"], detail["from_mode"], detail["to_mode"])
        for username, detail in _model_events(db)[2:]
    ]
    assert changes == [
        ("admin", "mode", "1.0.0", "off", "clinical"),
        ("admin", "demote", "1.0.0", "clinical", "shadow"),
        ("admin", "mode", "1.1.0", "off", "clinical"),
    ]


def test_a_plain_form_post_redirects_and_refusals_get_clear_statuses(
    admin: TestClient, installed: None, db: sessionmaker[Session]
) -> None:
    token = admin.headers.pop("X-CSRF-Token")  # a browser without JavaScript sends the form field
    form = {"version": "1.0.0", "csrf_token": token}
    shadow = admin.post(f"/admin/models/{MODEL}/mode", data=form | {"mode": "shadow"}, follow_redirects=False)
    assert shadow.status_code == 303 and shadow.headers["location"] == "/admin/models"
    retired = admin.post(f"/admin/models/{MODEL}/retire", data=form, follow_redirects=False)
    assert retired.status_code == 303
    assert _modes(db) == {"1.0.0": "off", "1.1.0": "off"}

    again = admin.post(f"/admin/models/{MODEL}/mode", data=form | {"mode": "clinical"})
    assert again.status_code == 409 and "retired" in again.text
    unknown = admin.post(f"/admin/models/{MODEL}/mode", data=form | {"version": "9.9.9", "mode": "shadow"})
    assert unknown.status_code == 404
    assert admin.post(f"/admin/models/{MODEL}/mode", data=form | {"mode": "on"}).status_code == 422
    assert admin.post("/admin/models/..%2Fetc/mode", data=form | {"mode": "off"}).status_code in (404, 422)

    page = admin.get("/admin/models").text
    assert "retired " in page and page.count('data-testid="make-') == 2  # buttons for 1.1.0 only
    assert [detail["change"] for _, detail in _model_events(db)[2:]] == ["mode", "retire"]


def test_failed_jobs_and_unrouted_series_are_listed_by_uid_with_their_reasons(
    admin: TestClient, installed: None, db: sessionmaker[Session]
) -> None:
    with transaction(db) as session:
        version_id = _version(db, "1.0.0").id
        now = utcnow()
        for index, (state, reason) in enumerate(
            [
                (JobState.FAILED, "failed 5 times; last error: <img src=x onerror=alert(1)>"),
                (JobState.NOT_APPLICABLE, "PhotometricInterpretation RGB is not supported"),
                (JobState.DONE, None),
                (JobState.QUEUED, None),
            ]
        ):
            session.add(
                Job(
                    study_uid=f"1.2.3.{index}",
                    series_uid=f"1.2.3.{index}.1",
                    model_version_id=version_id,
                    state=state.value,
                    attempts=5 if state is JobState.FAILED else 1,
                    reason=reason,
                    finished_at=now,
                )
            )
        session.add(
            UnroutedSeries(
                series_uid="1.2.9.1", study_uid="1.2.9", reason=f"{MODEL} 1.1.0: Modality CT not in CR, DX"
            )
        )

    page = admin.get("/admin/models").text
    assert "1.2.3.0.1" in page and "1.2.3.1.1" in page
    assert "1.2.3.2.1" not in page and "1.2.3.3.1" not in page  # done and queued jobs are not problems
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page
    assert "PhotometricInterpretation RGB is not supported" in page
    assert ">not applicable</span>" in page and ">failed</span>" in page
    assert "newest 2 of 2" in page
    assert "1.2.9.1" in page and "Modality CT not in CR, DX" in page


def test_the_page_says_when_nothing_is_installed_or_failing(admin: TestClient) -> None:
    page = admin.get("/admin/models").text
    assert "No model installed." in page
    assert "No failed or not-applicable jobs." in page
    assert "Every series seen went to at least one model." in page
