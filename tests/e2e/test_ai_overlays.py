"""AI overlays in a real browser: the heatmap is drawn over the right pixels, its opacity follows the slider,
key A hides and shows every overlay, a finding's checkbox hides its own, and the box is highlighted when its
finding is chosen. Pixels are read from the viewport's canvas at the image position of the heatmap."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.orm import sessionmaker

from inference.catalog import Mode
from openaim.db import make_engine, session_factory
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import HEATMAP_REGION, Image2D, add_result, install_model, store_chest_image

from .conftest import PageProblems, Platform, sign_in

pytestmark = pytest.mark.browser

HEATMAP_CENTRE = (
    (HEATMAP_REGION[0] + HEATMAP_REGION[2]) / 2,
    (HEATMAP_REGION[1] + HEATMAP_REGION[3]) / 2,
)


@pytest.fixture(scope="module")
def study_with_result(
    platform: Platform,
    orthanc: OrthancConnection,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Image2D:
    image = store_chest_image(orthanc, shared_data, "20250401", patient_id="AI-OVERLAY")
    engine = make_engine(platform.database_url)
    settings = Settings(data_dir=platform.data_dir, database_url=platform.database_url)
    db: sessionmaker = session_factory(engine, settings.resolved_audit_key)
    model = install_model(db, settings, tmp_path_factory.mktemp("model"), Mode.CLINICAL, number=7)
    add_result(db, image, model, "urgent", {"Effusion": 0.2, "Pneumothorax": 0.9})
    engine.dispose()
    return image


def _pixel(page: Page, x: float, y: float) -> list[int]:
    """The canvas's RGBA at the image pixel (x, y)."""
    return page.evaluate(
        """([x, y]) => {
            const viewport = document.openaimViewport;
            const at = viewport.imageToCanvas(x, y);
            return Array.from(viewport.context.getImageData(Math.round(at.x), Math.round(at.y), 1, 1).data);
        }""",
        [x, y],
    )


def _set_opacity(page: Page, percent: int) -> None:
    page.get_by_test_id("ai-opacity").fill(str(percent))  # a range input takes fill(); fires input


def test_heatmap_opacity_toggle_and_highlight(
    page: Page, platform: Platform, study_with_result: Image2D, problems: PageProblems, artifacts: Path
) -> None:
    sign_in(page, platform.url)
    page.goto(f"{platform.url}/studies/{study_with_result.study_uid}")
    expect(page.get_by_test_id("ai-result")).to_be_visible()
    page.wait_for_function(
        "() => document.openaimViewport && document.openaimViewport.stats().frames_loaded >= 1"
    )
    page.wait_for_function(
        "() => Array.from(document.openaimViewport.overlayImages.values()).every(image => image.complete)"
    )

    _set_opacity(page, 100)
    full = _pixel(page, *HEATMAP_CENTRE)
    page.screenshot(path=artifacts / "ai-overlay-opacity-100.png")
    _set_opacity(page, 50)
    half = _pixel(page, *HEATMAP_CENTRE)
    page.screenshot(path=artifacts / "ai-overlay-opacity-50.png")
    _set_opacity(page, 0)
    none = _pixel(page, *HEATMAP_CENTRE)

    page.locator("h1").click()
    page.keyboard.press("a")  # hide every overlay
    expect(page.get_by_test_id("ai-show-all")).not_to_be_checked()
    _set_opacity(page, 100)
    bare = _pixel(page, *HEATMAP_CENTRE)
    page.screenshot(path=artifacts / "ai-overlay-hidden.png")

    # At the heatmap's peak the colour map is opaque yellow (240, 249, 33; the browser's smoothing blends
    # in the neighbours): full opacity shows it, half is halfway between it and the image, zero (and
    # hidden) show the image itself.
    assert none == bare
    assert all(abs(got - want) <= 20 for got, want in zip(full[:3], (240, 249, 33), strict=True)), full
    for channel in range(3):
        assert abs(half[channel] - (full[channel] + bare[channel]) / 2) <= 3, (half, full, bare)

    page.keyboard.press("a")  # show again
    assert _pixel(page, *HEATMAP_CENTRE) == full
    finding = page.get_by_test_id("finding").filter(has_text="Pneumothorax")
    finding.locator(".finding-toggle").uncheck()
    assert _pixel(page, *HEATMAP_CENTRE) == bare  # that finding's heatmap is gone, the rest stays shown
    finding.locator(".finding-toggle").check()

    finding.get_by_test_id("finding-jump").click()
    expect(finding).to_have_class("finding is-current")
    assert page.evaluate("document.openaimViewport.highlighted").startswith("box-")
    page.screenshot(path=artifacts / "ai-overlay-highlight.png")
    assert problems.all() == []
