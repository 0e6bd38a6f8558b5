"""A reader's flow in a real browser: feedback, then Done (D) stores it, marks the study read and offers
the next unread study in worklist order beside the button; J (or the button) opens it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from inference.catalog import Mode
from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import Image2D, add_result, install_model, store_chest_image
from tests.viewer.study_index_fixtures import index_studies
from viewer.access.users import Role, add_user
from viewer.app import create_app

from .conftest import PASSWORD, USERNAME, PageProblems, serve, sign_in

pytestmark = pytest.mark.browser


@pytest.fixture
def served(
    tmp_path: Path, orthanc: OrthancConnection, shared_data: Path
) -> Iterator[tuple[str, Image2D, Image2D]]:
    """Two unread studies in the index, each with an urgent clinical AI result; the older one first."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'openaim.db'}",
        study_index_follow=False,  # the two studies are indexed here, not every study of the session
    )
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    db = session_factory(engine, settings.resolved_audit_key)
    with transaction(db) as session:
        add_user(session, USERNAME, PASSWORD, {Role.RADIOLOGIST}, display_name="Dr Reader")
    first = store_chest_image(orthanc, shared_data, "20250110", "NEXT-E2E-1", "ACC-N1", "FIRST^PATIENT")
    second = store_chest_image(orthanc, shared_data, "20250111", "NEXT-E2E-2", "ACC-N2", "SECOND^PATIENT")
    index_studies(orthanc, db, first.study_uid, second.study_uid)
    model = install_model(db, settings, tmp_path / "model", Mode.CLINICAL, number=41)
    for image in (first, second):
        add_result(db, image, model, "urgent", {"Effusion": 0.7, "Pneumothorax": 0.9})
    engine.dispose()
    with serve(create_app(settings, orthanc)) as base:
        yield base, first, second


def test_done_marks_the_study_read_and_j_opens_the_next_unread(
    page: Page, served: tuple[str, Image2D, Image2D], problems: PageProblems, artifacts: Path
) -> None:
    base, first, second = served
    sign_in(page, base)
    expect(page.get_by_test_id("worklist-row").first).to_have_attribute("data-study-uid", first.study_uid)
    page.goto(f"{base}/studies/{first.study_uid}")
    finding = page.get_by_test_id("finding").filter(has_text="Pneumothorax")
    finding.get_by_test_id("verdict-agree").click()
    expect(page.get_by_test_id("save-status")).to_have_text("Saved.")
    page.wait_for_function("() => localStorage.getItem('openaim-feedback-outbox') === '[]'")
    next_unread = page.get_by_test_id("next-unread")
    expect(next_unread).to_be_hidden()

    page.locator("h1").click()  # the keys work from the page, not only from the button
    page.keyboard.press("d")
    expect(next_unread).to_be_visible()
    expect(next_unread).to_contain_text("SECOND, PATIENT")
    expect(next_unread).to_contain_text("ACC-N2")
    expect(page.get_by_test_id("next-unread-link")).to_contain_text("J")
    page.screenshot(path=artifacts / "next-unread-offered.png")

    page.locator("h1").click()
    page.keyboard.press("j")
    expect(page).to_have_url(re.compile(rf"/studies/{re.escape(second.study_uid)}$"))

    page.goto(f"{base}/worklist")
    row = page.locator(f'tr[data-study-uid="{first.study_uid}"]')
    expect(row.get_by_test_id("read-status")).to_have_text("read")
    expect(page.get_by_test_id("worklist-row").first).to_have_attribute("data-study-uid", first.study_uid)

    page.goto(f"{base}/studies/{second.study_uid}")
    page.get_by_test_id("feedback-done").click()  # the button too; nothing unread is left
    expect(next_unread).to_contain_text("Every study in the worklist is read.")
    page.get_by_test_id("next-unread-link").click()
    expect(page).to_have_url(f"{base}/worklist")
    assert [problem for problem in problems.all() if "/feedback/sr" not in problem] == []
