"""Every page of the platform in a real Chromium, signed in with the role it needs: no console error,
no failed request, no blocked script or style (the strict Content-Security-Policy reports as an error)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from playwright.sync_api import Page, expect

from inference.catalog import Mode
from openaim.db import make_engine, session_factory, transaction
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import add_result, install_model, renumbered, store_chest_image
from tests.viewer.viewport_files import store
from viewer.access.users import Role, add_user

from .conftest import PASSWORD, PageProblems, Platform, sign_in

pytestmark = pytest.mark.browser

ADMIN = "e2e-admin"


@pytest.fixture(scope="module")
def pages(
    platform: Platform,
    orthanc: OrthancConnection,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[str]:
    """An admin who is also a reader and reviewer, and the platform's pages with something on them."""
    engine = make_engine(platform.database_url)
    settings = Settings(data_dir=platform.data_dir, database_url=platform.database_url)
    db = session_factory(engine, settings.resolved_audit_key)
    with transaction(db) as session:
        add_user(
            session, ADMIN, PASSWORD, {Role.ADMIN, Role.RADIOLOGIST, Role.REVIEWER}, display_name="Admin"
        )
    model = install_model(db, settings, tmp_path_factory.mktemp("model"), Mode.CLINICAL, number=9)
    with_ai = store_chest_image(orthanc, shared_data, "20250701", patient_id="E2E-PAGES")
    add_result(db, with_ai, model, "urgent", {"Effusion": 0.9, "Pneumothorax": 0.1})
    engine.dispose()

    foreign = renumbered(
        [
            shared_data / "dicom" / "foreign_ai" / "highdicom" / "seg_image_ct_binary_overlap.dcm",
            *sorted((shared_data / "dicom" / "foreign_ai" / "referenced_ct_16x16").glob("*.dcm")),
        ]
    )
    store(orthanc, foreign)
    foreign_study = foreign[0].StudyInstanceUID
    with orthanc.client() as client:
        for path in sorted((shared_data / "dicom" / "ct_3slice").glob("*.dcm")):
            client.post("/instances", content=path.read_bytes()).raise_for_status()
    ct = pydicom.dcmread(next((shared_data / "dicom" / "ct_3slice").glob("*.dcm")), stop_before_pixels=True)
    return [
        "/worklist",
        f"/studies/{with_ai.study_uid}",
        f"/studies/{foreign_study}",
        f"/studies/{ct.StudyInstanceUID}",
        f"/models/{model.model_id}/{model.version}",
        "/admin/models",
        "/admin/users",
        f"/admin/users/{ADMIN}",
        "/admin/audit",
        "/account/password",
        "/review",
        "/review/meetings",
        "/my/feedback",
    ]


def test_every_page_loads_without_a_console_error(
    page: Page, platform: Platform, pages: list[str], problems: PageProblems, artifacts: Path
) -> None:
    sign_in(page, platform.url, ADMIN)
    for path in pages:
        response = page.goto(f"{platform.url}{path}")
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("load")
        page.wait_for_timeout(300)  # htmx fragments and the viewport start after load
        if path.startswith("/studies/"):
            expect(page.get_by_test_id("ai-panel")).to_be_visible()
            page.wait_for_function(
                "() => document.openaimViewport && document.openaimViewport.stats().frames_loaded >= 1"
            )
        name = path.strip("/").replace("/", "-")[:60] or "home"
        page.screenshot(path=artifacts / f"page-{name}.png", full_page=True)
        assert problems.all() == [], f"{path}: {problems.all()}"
    # A page that is not there is an answer, not an error in the browser's console.
    assert page.goto(f"{platform.url}/studies/1.2.3.4.5.6.7.8.9").status == 404
