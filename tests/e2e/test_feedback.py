"""Feedback in a real browser: two clicks or one key per finding, and nothing lost when the server goes
away in the middle of a save: the click waits in the browser's outbox and is stored, once, when the
server is back."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from inference.catalog import Mode
from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.settings import Settings
from orthanc import OrthancConnection
from orthanc.launcher import free_port
from tests.viewer.ai_fixtures import Image2D, add_result, install_model, store_chest_image
from viewer.access.users import Role, add_user
from viewer.app import create_app
from viewer.feedback.records import Feedback

from .conftest import PASSWORD, USERNAME, PageProblems, serve, sign_in

pytestmark = pytest.mark.browser


@pytest.fixture
def setting(tmp_path: Path, orthanc: OrthancConnection, shared_data: Path) -> tuple[Settings, Image2D]:
    """A database of its own with a reader and one study with a clinical AI result."""
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'openaim.db'}")
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    db = session_factory(engine, settings.resolved_audit_key)
    with transaction(db) as session:
        add_user(session, USERNAME, PASSWORD, {Role.RADIOLOGIST}, display_name="Dr Reader")
    image = store_chest_image(orthanc, shared_data, "20250601", patient_id="E2E-FEEDBACK")
    model = install_model(db, settings, tmp_path / "model", Mode.CLINICAL, number=5)
    add_result(db, image, model, "urgent", {"Effusion": 0.7, "Pneumothorax": 0.9})
    engine.dispose()
    return settings, image


def open_study(page: Page, base: str, image: Image2D) -> None:
    """Signed in, on the study's page, with its AI result shown."""
    sign_in(page, base)
    page.goto(f"{base}/studies/{image.study_uid}")
    expect(page.get_by_test_id("ai-result")).to_be_visible()


def _rows(settings: Settings) -> list[Feedback]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_factory(engine)() as session:
            return list(session.scalars(select(Feedback).order_by(Feedback.id)))
    finally:
        engine.dispose()


def test_a_click_during_an_outage_is_saved_once_when_the_server_is_back(
    page: Page, setting: tuple[Settings, Image2D], orthanc: OrthancConnection, artifacts: Path
) -> None:
    settings, image = setting
    port = free_port()
    with serve(create_app(settings, orthanc), port) as base:
        open_study(page, base, image)
        finding = page.get_by_test_id("finding").filter(has_text="Pneumothorax")
        finding.get_by_test_id("verdict-agree").click()  # the second click of "choose finding, agree"
        expect(page.get_by_test_id("save-status")).to_have_text("Saved.")
        assert [(row.finding_label, row.verdict) for row in _rows(settings)] == [("Pneumothorax", "agree")]

    # The server is gone: the click is kept and retried, and the reader is told so.
    effusion = page.get_by_test_id("finding").filter(has_text="Pleural effusion")
    effusion.get_by_test_id("verdict-disagree").click()
    expect(page.get_by_test_id("save-status")).to_contain_text("Not saved yet")
    page.screenshot(path=artifacts / "feedback-retrying.png")
    assert len(_rows(settings)) == 1
    assert page.evaluate("JSON.parse(localStorage.getItem('openaim-feedback-outbox')).length") == 1

    with serve(create_app(settings, orthanc), port):
        expect(page.get_by_test_id("save-status")).to_have_text("Saved.", timeout=20_000)
        page.screenshot(path=artifacts / "feedback-saved-after-outage.png")
    rows = _rows(settings)
    assert [(row.finding_label, row.verdict) for row in rows] == [
        ("Pneumothorax", "agree"),
        ("Pleural effusion", "disagree"),
    ]
    assert page.evaluate("localStorage.getItem('openaim-feedback-outbox')") == "[]"


def test_one_key_gives_the_verdict_and_a_reason_makes_a_new_version(
    page: Page, setting: tuple[Settings, Image2D], orthanc: OrthancConnection, problems: PageProblems
) -> None:
    settings, image = setting
    with serve(create_app(settings, orthanc)) as base:
        open_study(page, base, image)
        finding = page.get_by_test_id("finding").filter(has_text="Pneumothorax")
        finding.get_by_test_id("finding-jump").click()
        page.locator("h1").click()
        page.keyboard.press("n")
        expect(finding.get_by_test_id("verdict-disagree")).to_have_attribute("aria-pressed", "true")
        expect(page.get_by_test_id("save-status")).to_have_text("Saved.")
        finding.get_by_test_id("reason").select_option("false_positive_artefact")
        expect(page.get_by_test_id("save-status")).to_have_text("Saved.")
        page.wait_for_function("() => localStorage.getItem('openaim-feedback-outbox') === '[]'")
        page.get_by_test_id("triage-no").click()
        page.wait_for_function("() => localStorage.getItem('openaim-feedback-outbox') === '[]'")
        assert problems.all() == []
    rows = _rows(settings)
    assert [(row.target.split(":")[0], row.verdict, row.reason, row.version) for row in rows] == [
        ("finding", "disagree", None, 1),
        ("finding", "disagree", "false_positive_artefact", 2),
        ("study", None, None, 1),
    ]
    assert rows[2].triage_correct is False
    assert all(row.seconds_on_study is not None and row.seconds_on_study > 0 for row in rows)


def test_a_missed_finding_is_drawn_on_the_image_and_saved_with_its_box(
    page: Page, setting: tuple[Settings, Image2D], orthanc: OrthancConnection, artifacts: Path
) -> None:
    settings, image = setting
    with serve(create_app(settings, orthanc)) as base:
        open_study(page, base, image)
        page.wait_for_function(
            "() => document.openaimViewport && document.openaimViewport.stats().frames_loaded >= 1"
        )
        page.locator("h1").click()
        page.keyboard.press("m")
        expect(page.get_by_test_id("save-status")).to_contain_text("Draw a box")
        corners = page.evaluate(
            """() => {
                const viewport = document.openaimViewport;
                const box = viewport.canvas.getBoundingClientRect();
                const scale = box.width / viewport.canvas.width;
                return [[20, 30], [60, 70]].map(([x, y]) => {
                    const at = viewport.imageToCanvas(x, y);
                    return [box.left + at.x * scale, box.top + at.y * scale];
                });
            }"""
        )
        page.mouse.move(*corners[0])
        page.mouse.down()
        page.mouse.move(*corners[1], steps=5)
        page.mouse.up()
        expect(page.get_by_test_id("save-status")).to_have_text("Saved.")
        page.screenshot(path=artifacts / "feedback-missed-finding.png")
    [row] = [row for row in _rows(settings) if row.kind == "missed"]
    assert row.reason == "false_negative" and row.mark is not None
    assert row.mark["instance_uid"] == image.instance_uid and row.mark["frame"] == 1
    assert all(abs(got - want) <= 1.5 for got, want in zip(row.mark["box"], (20, 30, 60, 70), strict=True)), (
        row.mark
    )
