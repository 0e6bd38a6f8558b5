"""User administration in a real Chromium: an admin adds a user, who signs in with the temporary
password shown once, must choose their own before anything else opens, and then reaches the worklist;
the admin's audit log shows both, and says the hash chain verifies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.settings import Settings
from orthanc import OrthancConnection
from viewer.access.users import Role, add_user
from viewer.app import create_app

from .conftest import PASSWORD, PageProblems, serve

pytestmark = pytest.mark.browser

ADMIN = "chief-admin"
NEWCOMER = "dr.newcomer"
OWN_PASSWORD = "my very own reading-room password"


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancConnection) -> Iterator[str]:
    """The platform with one admin and no studies: this test is about people, not images."""
    tmp = tmp_path_factory.mktemp("user-admin")
    url = f"sqlite:///{tmp / 'openaim.db'}"
    upgrade(url)
    engine = make_engine(url)
    with transaction(session_factory(engine)) as db:
        add_user(db, ADMIN, PASSWORD, {Role.ADMIN}, display_name="Chief Admin")
    engine.dispose()
    settings = Settings(data_dir=tmp / "data", database_url=url, study_index_follow=False)
    with serve(create_app(settings, orthanc)) as base:
        yield base


def _sign_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/signin?next=/worklist")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_admin_adds_a_user_who_must_change_the_password_at_first_sign_in(
    browser: Browser, viewer: str, problems: PageProblems, artifacts: Path
) -> None:
    admin_context = browser.new_context(viewport={"width": 1400, "height": 900})
    admin = admin_context.new_page()
    admin.on("console", problems.on_console)
    admin.on("pageerror", problems.on_page_error)
    _sign_in(admin, viewer, ADMIN, PASSWORD)
    admin.wait_for_url(f"{viewer}/worklist")
    admin.get_by_role("navigation").get_by_role("link", name="Users").click()
    admin.wait_for_url(f"{viewer}/admin/users")

    form = admin.get_by_test_id("add-user")
    form.get_by_label("User name").fill(NEWCOMER)
    form.get_by_label("Name shown").fill("Dr <b>Newcomer</b>")
    form.get_by_label("radiologist").check()
    form.get_by_role("button", name="Add user").click()
    expect(admin.get_by_test_id("admin-notice")).to_have_text(f"{NEWCOMER}: added.")
    temporary = admin.get_by_test_id("temporary-password").inner_text()
    assert len(temporary) >= 12
    row = admin.locator(f'tr[data-username="{NEWCOMER}"]')
    expect(row).to_contain_text("Dr <b>Newcomer</b>")  # shown as text, not markup
    expect(row).to_contain_text("must change password")
    admin.screenshot(path=artifacts / "user-admin-added.png", full_page=True)

    newcomer_context = browser.new_context(viewport={"width": 1400, "height": 900})
    newcomer = newcomer_context.new_page()
    newcomer.on("console", problems.on_console)
    newcomer.on("pageerror", problems.on_page_error)
    _sign_in(newcomer, viewer, NEWCOMER, temporary)
    newcomer.wait_for_url(f"{viewer}/account/password?next=/worklist")
    expect(newcomer.get_by_test_id("must-change")).to_be_visible()
    expect(newcomer.get_by_role("link", name="Worklist")).to_have_count(0)
    newcomer.goto(f"{viewer}/worklist")  # nothing else opens until the password is changed
    newcomer.wait_for_url(f"{viewer}/account/password?next=/worklist")
    newcomer.get_by_label("Current password").fill(temporary)
    newcomer.get_by_label("New password", exact=True).fill(OWN_PASSWORD)
    newcomer.get_by_label("New password again").fill(OWN_PASSWORD)
    newcomer.screenshot(path=artifacts / "user-admin-must-change.png", full_page=True)
    newcomer.get_by_role("button", name="Change password").click()
    newcomer.wait_for_url(f"{viewer}/worklist")
    expect(newcomer.get_by_test_id("signed-in-user")).to_have_text("Dr <b>Newcomer</b>")
    newcomer_context.close()

    admin.get_by_role("navigation").get_by_role("link", name="Audit log").click()
    admin.wait_for_url(f"{viewer}/admin/audit")
    expect(admin.get_by_test_id("chain-result")).to_have_attribute("data-verified", "true")
    expect(admin.get_by_test_id("chain-result")).to_contain_text("Hash chain verified")
    admin.get_by_label("User", exact=True).fill(NEWCOMER)
    admin.get_by_role("button", name="Filter").click()
    events = admin.get_by_test_id("audit-events")
    expect(events).to_contain_text("password changed")
    expect(events).to_contain_text("UserAuthentication")
    with admin.expect_download() as download:
        admin.get_by_test_id("audit-csv").click()
    assert download.value.suggested_filename.startswith("openaim-audit-")
    admin.screenshot(path=artifacts / "user-admin-audit-log.png", full_page=True)
    admin_context.close()
    assert problems.all() == []
