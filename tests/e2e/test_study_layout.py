"""The study page in a real browser at the reading room's two common window sizes: it fits the window with
no page scroll, the image is never under the toolbar, and a save's message appears beside the button that
caused it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from inference.catalog import Mode
from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import (
    Image2D,
    add_result,
    install_model,
    store_chest_image,
    store_result_object,
)
from viewer.access.users import Role, add_user
from viewer.app import create_app

from .conftest import PASSWORD, USERNAME, PageProblems, serve, sign_in

pytestmark = pytest.mark.browser

SIZES = [(1366, 768), (1920, 1080)]
NEAR_PX = 48  # a message this close under (or beside) its button is read as its answer

Box = dict[str, float]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancConnection, shared_data: Path
) -> Iterator[tuple[str, Image2D]]:
    """The viewer over a database of its own: a reader, one chest X-ray with a clinical AI result, and the
    AI's SR and SEG in the archive beside it."""
    tmp = tmp_path_factory.mktemp("layout")
    settings = Settings(data_dir=tmp / "data", database_url=f"sqlite:///{tmp / 'openaim.db'}")
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    db = session_factory(engine, settings.resolved_audit_key)
    with transaction(db) as session:
        add_user(session, USERNAME, PASSWORD, {Role.RADIOLOGIST}, display_name="Dr Reader")
    image = store_chest_image(orthanc, shared_data, "20250602", patient_id="E2E-LAYOUT")
    model = install_model(db, settings, tmp / "model", Mode.CLINICAL, number=11)
    add_result(db, image, model, "urgent", {"Effusion": 0.7, "Pneumothorax": 0.9})
    engine.dispose()
    store_result_object(orthanc, image, "SR", "AI results: tiny model", model.device_uid)
    store_result_object(orthanc, image, "SEG", "AI heatmaps: tiny model", model.device_uid)
    with serve(create_app(settings, orthanc)) as base:
        yield base, image


@pytest.fixture(params=SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def sized_page(request: pytest.FixtureRequest, browser: Browser, problems: PageProblems) -> Iterator[Page]:
    width, height = request.param
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("console", problems.on_console)
    page.on("pageerror", problems.on_page_error)
    page.on("response", problems.on_response)
    yield page
    context.close()


def _box(locator: Locator) -> Box:
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not laid out"
    return {
        "left": box["x"],
        "top": box["y"],
        "right": box["x"] + box["width"],
        "bottom": box["y"] + box["height"],
    }


def _overlap(one: Box, other: Box) -> bool:
    return (
        one["left"] < other["right"]
        and other["left"] < one["right"]
        and one["top"] < other["bottom"]
        and other["top"] < one["bottom"]
    )


def _gap(one: Box, other: Box) -> float:
    """The distance between two boxes (0 when they touch or overlap)."""
    dx = max(other["left"] - one["right"], one["left"] - other["right"], 0)
    dy = max(other["top"] - one["bottom"], one["top"] - other["bottom"], 0)
    return float((dx**2 + dy**2) ** 0.5)


def test_the_study_page_fits_the_window_and_the_image_is_never_under_the_toolbar(
    sized_page: Page, served: tuple[str, Image2D], problems: PageProblems, artifacts: Path
) -> None:
    page, (base, image) = sized_page, served
    sign_in(page, base)
    page.goto(f"{base}/studies/{image.study_uid}")
    expect(page.get_by_test_id("ai-result")).to_be_visible()
    page.wait_for_function(
        "() => document.openaimViewport && document.openaimViewport.stats().frames_loaded >= 1"
    )
    size = page.viewport_size
    assert size is not None
    page.screenshot(path=artifacts / f"study-layout-{size['width']}x{size['height']}.png")

    scroll = page.evaluate(
        "() => ({height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth})"
    )
    assert scroll["height"] <= size["height"], (scroll, size)
    assert scroll["width"] <= size["width"], (scroll, size)

    canvas, tools, viewport = (
        _box(page.locator(".viewport-canvas").first),
        _box(page.locator(".viewport-tools").first),
        _box(page.locator("#viewport").first),
    )
    assert not _overlap(canvas, tools), (canvas, tools)
    for part in (canvas, tools):  # both inside the viewport, and the viewport inside the window
        assert viewport["top"] <= part["top"] and part["bottom"] <= viewport["bottom"] + 0.5, (part, viewport)
    assert viewport["bottom"] <= size["height"] and canvas["bottom"] - canvas["top"] >= 0.5 * size["height"]
    # The drawing buffer follows the canvas's box, so the image is fitted to what is visible.
    buffer = page.evaluate(
        "() => [document.openaimViewport.canvas.width, document.openaimViewport.canvas.height]"
    )
    ratio = page.evaluate("() => window.devicePixelRatio")
    assert abs(buffer[1] - (canvas["bottom"] - canvas["top"]) * ratio) <= 2, (buffer, canvas)

    # The AI results in the archive are named in the strip as results, not as images.
    expect(page.get_by_test_id("ai-series")).to_contain_text("AI results: tiny model")
    expect(page.locator(".series-thumb.not-image")).to_have_count(0)
    assert problems.all() == []


def test_a_save_message_appears_beside_the_button_that_caused_it(
    sized_page: Page, served: tuple[str, Image2D]
) -> None:
    page, (base, image) = sized_page, served
    sign_in(page, base)
    page.goto(f"{base}/studies/{image.study_uid}")
    status = page.get_by_test_id("save-status")
    finding = page.get_by_test_id("finding").filter(has_text="Pneumothorax")
    button = finding.get_by_test_id("verdict-agree")
    button.click()
    expect(status).to_have_text("Saved.")
    status.scroll_into_view_if_needed()
    assert _gap(_box(page.locator("[data-testid=save-status]").first), _box(button)) <= NEAR_PX

    triage = page.get_by_test_id("triage-no")
    triage.click()
    expect(status).to_have_text("Saved.")
    assert _gap(_box(page.locator("[data-testid=save-status]").first), _box(triage)) <= NEAR_PX

    done = page.get_by_test_id("feedback-done")
    page.wait_for_function("() => localStorage.getItem('openaim-feedback-outbox') === '[]'")
    done.click()
    expect(status).not_to_have_text("Saved.")  # whatever the archive answers, it is said beside Done
    status.scroll_into_view_if_needed()
    assert _gap(_box(page.locator("[data-testid=save-status]").first), _box(done)) <= NEAR_PX
