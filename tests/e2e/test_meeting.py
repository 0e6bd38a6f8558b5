"""A review meeting in a real browser: the chair starts a meeting from the queue, steps through two cases
with the keyboard, records a consensus and lands on the summary. Any console error, uncaught exception or
failed request (an image the CSP or a route refused) fails the test."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from inference.catalog import Mode
from inference.results import Finding
from openaim.db import make_engine, session_factory, transaction
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import add_result, install_model, store_chest_image
from viewer.access.users import Role, add_user, find_user
from viewer.feedback import records
from viewer.feedback.records import FeedbackInput, Kind, Reason, Verdict

from .conftest import PASSWORD, USERNAME, PageProblems, Platform, sign_in

pytestmark = pytest.mark.browser

CHAIR = "chair"
PATIENT_IDS = ("MEETING-PID-7731", "MEETING-PID-7732")


@pytest.fixture(scope="module")
def two_discrepancies(
    platform: Platform,
    orthanc: OrthancConnection,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[str]:
    """Two studies with a clinical AI result each, where the reader disagreed with its positive finding."""
    engine = make_engine(platform.database_url)
    settings = Settings(data_dir=platform.data_dir, database_url=platform.database_url)
    factory = session_factory(engine, settings.resolved_audit_key)
    model = install_model(factory, settings, tmp_path_factory.mktemp("model"), Mode.CLINICAL, number=7)
    with transaction(factory) as db:
        add_user(db, CHAIR, PASSWORD, {Role.REVIEWER}, display_name="Dr Chair")
    study_uids = []
    for patient_id in PATIENT_IDS:
        image = store_chest_image(
            orthanc, shared_data, "20250301", patient_id, accession=f"ACC{patient_id[-4:]}"
        )
        result_id = add_result(factory, image, model, "urgent", {"Effusion": 0.2, "Pneumothorax": 0.95})
        with transaction(factory) as db:
            finding = db.scalar(select(Finding).where(Finding.result_id == result_id, Finding.positive))
            reader = find_user(db, USERNAME)
            assert finding is not None and reader is not None
            given = FeedbackInput(
                client_id=str(uuid.uuid4()),
                study_uid=image.study_uid,
                kind=Kind.FINDING,
                target=f"finding:finding-{finding.id}",
                result_id=f"platform-{result_id}",
                finding_id=f"finding-{finding.id}",
                finding_label=finding.display_name,
                verdict=Verdict.DISAGREE,
                reason=Reason.FALSE_POSITIVE_ARTEFACT,
                model_id=model.model_id,
                model_version=model.version,
            )
            records.save(db, reader, given)
        study_uids.append(image.study_uid)
    engine.dispose()
    return study_uids


def test_step_through_a_meeting_with_the_keyboard(
    page: Page, platform: Platform, two_discrepancies: list[str], problems: PageProblems, artifacts: Path
) -> None:
    sign_in(page, platform.url, CHAIR)
    page.get_by_role("link", name="Review", exact=True).click()
    queue = page.get_by_test_id("review-queue")
    for study_uid in two_discrepancies:
        expect(queue.locator(f'tr[data-study-uid="{study_uid}"]')).to_have_count(1)
    page.get_by_label("Title").fill("E2E discrepancy meeting")
    page.get_by_label("Other attendees, one per line").fill("Dr Guest")
    page.screenshot(path=artifacts / "review-queue.png", full_page=True)
    page.get_by_role("button", name="Start meeting").click()

    title = page.get_by_test_id("case-title")
    expect(title).to_have_text("Case 1 of 2")
    expect(page.get_by_test_id("case-ai")).to_contain_text("Pneumothorax")
    expect(page.get_by_test_id("case-ai")).to_contain_text("0.95")
    expect(page.get_by_test_id("case-readers")).to_contain_text("false positive artefact")
    expect(page.locator("svg[data-testid=case-image] rect.ai-box")).to_have_count(1)
    page.wait_for_load_state("networkidle")  # the image and the heatmap have arrived
    page.screenshot(path=artifacts / "meeting-case-1.png", full_page=True)

    # Each key loads the next page; waiting for its load event means its module script listens again.
    for key, number in (("n", 2), ("ArrowLeft", 1), ("ArrowRight", 2)):
        page.keyboard.press(key)
        page.wait_for_url(re.compile(rf"/review/meetings/\d+/cases/{number}$"))
        expect(title).to_have_text(f"Case {number} of 2")
    page.keyboard.press("a")
    expect(page.locator("svg[data-testid=case-image] .ai-marks").first).to_be_hidden()
    page.keyboard.press("a")

    page.get_by_label("Reader right").check()
    page.get_by_label("Learning point").press_sequentially(
        "Skin folds mimic pneumothorax; typing n, p: no step"
    )
    expect(title).to_have_text("Case 2 of 2")
    page.get_by_label("Follow-up action").fill("Send the case to the vendor")
    page.get_by_role("button", name="Save decision").click()
    expect(page.get_by_test_id("decided-by")).to_contain_text("Dr Chair")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=artifacts / "meeting-case-2-decided.png", full_page=True)

    content = page.content()
    for patient_id in PATIENT_IDS:
        assert patient_id not in content and f"ACC{patient_id[-4:]}" not in content
    for study_uid in two_discrepancies:
        assert study_uid not in content

    page.keyboard.press("n")  # after the last case: the meeting's summary
    page.wait_for_url(re.compile(r"/review/meetings/\d+$"))
    cases = page.get_by_test_id("meeting-cases")
    expect(cases).to_contain_text("Reader right")
    expect(cases).to_contain_text("Send the case to the vendor")
    expect(page.get_by_test_id("attendees")).to_have_text("Dr Chair, Dr Guest")  # the chair first
    page.get_by_test_id("end-meeting").click()
    expect(page.get_by_test_id("end-meeting")).to_have_count(0)
    page.screenshot(path=artifacts / "meeting-summary.png", full_page=True)
    assert problems.all() == []
