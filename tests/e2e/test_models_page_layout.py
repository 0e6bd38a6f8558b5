"""The admin's Models page in a real browser at 1366x768 and 1920x1080: the cards use the width of the
screen and no table spills out of its box (64-character UIDs and long reasons wrap inside their cells)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page
from pydicom.uid import generate_uid

from inference.catalog import Mode
from inference.jobs import Job, JobState
from inference.router import UnroutedSeries
from openaim.db import make_engine, session_factory, transaction, upgrade, utcnow
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import install_model
from viewer.access.users import Role, add_user
from viewer.app import create_app

from .conftest import PASSWORD, PageProblems, serve, sign_in

pytestmark = pytest.mark.browser

SIZES = [(1366, 768), (1920, 1080)]
ADMIN = "admin"


def _long_uid() -> str:
    uid = str(generate_uid(prefix="1.2.826.0.1.3680043.8.498.1234567890."))
    return (uid + "1234567890" * 7)[:64]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancConnection) -> Iterator[str]:
    """Two installed versions, failed jobs with long reasons, and series no model accepts, all with
    64-character UIDs (the longest DICOM allows, and what real archives hold)."""
    tmp = tmp_path_factory.mktemp("models-layout")
    settings = Settings(data_dir=tmp / "data", database_url=f"sqlite:///{tmp / 'openaim.db'}")
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    db = session_factory(engine, settings.resolved_audit_key)
    with transaction(db) as session:
        add_user(session, ADMIN, PASSWORD, {Role.ADMIN}, display_name="Dr Admin")
    version = install_model(db, settings, tmp / "one", Mode.CLINICAL, number=21)
    install_model(db, settings, tmp / "two", Mode.SHADOW, number=22)
    reason = "failed 5 times; last error: " + "the archive refused the SR (HTTP 400, a very long answer) " * 4
    with transaction(db) as session:
        for state in (JobState.FAILED, JobState.NOT_APPLICABLE) * 3:
            session.add(
                Job(
                    study_uid=_long_uid(),
                    series_uid=_long_uid(),
                    model_version_id=version.id,
                    state=state.value,
                    attempts=5,
                    reason=reason,
                    finished_at=utcnow(),
                )
            )
        for _ in range(4):
            series = UnroutedSeries(
                series_uid=_long_uid(),
                study_uid=_long_uid(),
                reason="openaim.tiny-21 1.0.0: Modality is CT (expects CR, DX); "
                "openaim.tiny-22 1.0.0: Modality is CT (expects CR, DX)",
            )
            session.add(series)
    engine.dispose()
    with serve(create_app(settings, orthanc)) as base:
        yield base


@pytest.fixture(params=SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def sized_page(request: pytest.FixtureRequest, browser: Browser, problems: PageProblems) -> Iterator[Page]:
    width, height = request.param
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("console", problems.on_console)
    page.on("pageerror", problems.on_page_error)
    yield page
    context.close()


def test_the_models_page_uses_the_width_and_its_tables_do_not_spill(
    sized_page: Page, served: str, problems: PageProblems, artifacts: Path
) -> None:
    page = sized_page
    sign_in(page, served, ADMIN)
    page.goto(f"{served}/admin/models")
    size = page.viewport_size
    assert size is not None
    page.screenshot(path=artifacts / f"models-{size['width']}x{size['height']}.png", full_page=True)
    measured = page.evaluate(
        """() => ({
            scrollWidth: document.documentElement.scrollWidth,
            main: document.querySelector("main").getBoundingClientRect().right,
            cards: Math.max(...[...document.querySelectorAll("[data-testid=model-card]")]
                .map((card) => card.getBoundingClientRect().right)),
            rows: new Set([...document.querySelectorAll("[data-testid=model-card]")]
                .map((card) => Math.round(card.getBoundingClientRect().top))).size,
            spills: [...document.querySelectorAll("table")].flatMap((table) => {
                const box = table.parentElement.getBoundingClientRect();
                const own = table.getBoundingClientRect();
                const cells = [...table.querySelectorAll("td, th")]
                    .filter((cell) => cell.scrollWidth > cell.clientWidth + 1);
                const where = table.closest("section, article").dataset.testid;
                return own.right > box.right + 1 || cells.length ? [where] : [];
            }),
        })"""
    )
    assert measured["scrollWidth"] <= size["width"], measured
    assert measured["spills"] == [], measured
    # the two versions side by side, reaching the right of the page (within its padding)
    assert measured["rows"] == 1 and measured["cards"] >= measured["main"] - 24, measured
    assert problems.all() == []
