"""A radiologist's first minute in a real browser: sign in, find a study, see the image.

Everything is real: Orthanc with seeded demo chest X-rays, the viewer under uvicorn, Chromium. Any
console error fails the test, which is how a Content-Security-Policy that blocks a script or style shows.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import store_chest_image

from .conftest import PASSWORD, USERNAME, PageProblems, sign_in

pytestmark = pytest.mark.browser


def test_sign_in_worklist_filter_and_study(
    page: Page, viewer_url: str, problems: PageProblems, artifacts: Path
) -> None:
    page.goto(f"{viewer_url}/worklist")
    expect(page).to_have_url(re.compile(r"/signin\?next=/worklist$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    page.get_by_label("User name").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{viewer_url}/worklist")
    expect(page.get_by_test_id("signed-in-user")).to_have_text("Dr Reader")

    # The Secure __Host- cookies survive on http://127.0.0.1 (a secure context for Chromium).
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert "__Host-openaim_session" in cookies, sorted(cookies)
    assert cookies["__Host-openaim_session"]["secure"]
    assert cookies["__Host-openaim_session"]["httpOnly"]

    rows = page.locator("#worklist-rows tr")
    demo_rows = rows.filter(has_text="DEMO-")
    expect(demo_rows.first).to_be_visible()
    expect(demo_rows.first.locator("td").nth(1)).to_contain_text("DEMO")  # after the AI flag column
    row_count = rows.count()
    patient_id = demo_rows.first.locator("td").nth(2).inner_text()
    assert row_count >= 3
    assert page.evaluate("typeof htmx") == "object", "htmx did not load"
    page.screenshot(path=artifacts / "worklist.png", full_page=True)

    # The filter swaps the table body through htmx; a full reload would drop the marker.
    page.evaluate("window.__noReload = true")
    page.get_by_label("Patient ID").fill("NO-SUCH-ID")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_text("No studies match.")
    assert page.evaluate("window.__noReload") is True, "the filter reloaded the whole page"
    expect(page).to_have_url(re.compile(r"q=NO-SUCH-ID"))

    page.get_by_label("Patient ID").fill(patient_id)
    expect(rows.first).to_contain_text(patient_id)
    expect(rows.filter(has_not_text=patient_id)).to_have_count(0)

    page.get_by_label("Patient ID").fill("")
    expect(rows).to_have_count(row_count)
    assert page.evaluate("window.__noReload") is True

    demo_rows.first.get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/studies/[0-9.]+$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("DEMO")
    # The images themselves: tests/e2e/test_viewport.py.
    assert problems.all() == []


def test_worklist_updates_by_itself_and_works_from_the_keyboard(
    page: Page, viewer_url: str, problems: PageProblems, orthanc: OrthancConnection, shared_data: Path
) -> None:
    sign_in(page, viewer_url)
    rows = page.locator("#worklist-rows tr[data-study-uid]")
    expect(rows.first).to_be_visible()
    page.evaluate("window.__noReload = true")
    polls: list[dict[str, str]] = []  # the table body's own requests (htmx names it in HX-Trigger)
    page.on(
        "request",
        lambda r: polls.append(r.headers) if r.headers.get("hx-trigger") == "worklist-rows" else None,
    )

    arrived = store_chest_image(orthanc, shared_data, "19990101", patient_id="LIVE-ARRIVAL")
    new_row = page.locator(f'#worklist-rows tr[data-study-uid="{arrived.study_uid}"]')
    expect(new_row).to_be_visible(timeout=10_000)  # the table polls; nobody pressed reload
    assert page.evaluate("window.__noReload") is True
    # The table's polls say so (they keep no session alive) and still carry the session's CSRF token.
    assert polls and all(p.get("x-openaim-poll") == "1" and p.get("x-csrf-token") for p in polls)
    expect(new_row.get_by_test_id("ai-status")).to_have_text("waiting")  # no inference service runs here

    page.locator("h1").click()  # focus on the page, not a filter
    page.keyboard.press("ArrowDown")
    expect(rows.first).to_have_class(re.compile("is-selected"))
    page.keyboard.press("j")
    expect(rows.nth(1)).to_have_class(re.compile("is-selected"))
    page.keyboard.press("k")
    selected = rows.first.get_attribute("data-study-uid")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"/studies/{re.escape(str(selected))}$"))
    assert problems.all() == []
