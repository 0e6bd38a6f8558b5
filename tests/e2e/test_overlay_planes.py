"""Overlay planes (60xx) in real Chromium: drawn white over the frames they cover, at their origin, shown
by default, hidden and shown again with G; the information overlay says when the image has one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from orthanc import OrthancConnection
from tests.viewer.reading.test_overlay_planes import MULTI_FRAME_MR, add_plane
from tests.viewer.viewport_files import relabelled, store

from .conftest import PageProblems
from .test_viewport import READ_PIXELS, open_series, signed_in  # noqa: F401 (signed_in: a fixture)

pytestmark = pytest.mark.browser

PLANES_DRAWN = (
    "() => { const v = document.openaimViewport; return v.overlayPlanes.size > 0"
    " && v.planeImages.size > 0 && [...v.planeImages.values()].every((p) => p.complete && p.naturalWidth); }"
)


def test_a_multi_frame_overlay_plane_is_drawn_on_its_frames_and_toggled_with_g(
    signed_in: Page,  # noqa: F811
    viewer_url: str,
    shared_data: Path,
    orthanc: OrthancConnection,
    problems: PageProblems,
    artifacts: Path,
) -> None:
    page = signed_in
    ds = relabelled(shared_data / MULTI_FRAME_MR, "e2e overlay planes")
    bits = np.zeros((2, 12, 20), dtype=np.uint8)
    bits[0, 0, :] = bits[0, -1, :] = bits[0, :, 0] = bits[0, :, -1] = 1  # a box on image frame 4
    add_plane(ds, 0x6000, bits, origin=(9, 5), first=4)  # row 9, column 5 (1-based): frames 4 and 5
    store(orthanc, [ds])
    open_series(page, viewer_url, ds)
    set_points = [(4 + x, 8) for x in range(20)] + [(4, 8 + y) for y in range(12)]  # (x, y), 0-based
    clear_points = [(10, 12), (30, 30), (2, 2)]

    page.evaluate("document.openaimViewport.show(3)")  # image frame 4
    page.wait_for_function(PLANES_DRAWN)
    expect(page.get_by_test_id("overlay-planes")).to_have_text("Overlay")
    drawn = page.evaluate(READ_PIXELS, [list(p) for p in set_points + clear_points])
    assert all(colour == [255, 255, 255] for colour in drawn[: len(set_points)]), drawn
    assert any(colour != [255, 255, 255] for colour in drawn[len(set_points) :]), drawn
    page.screenshot(path=artifacts / "viewport-overlay-plane.png")

    page.keyboard.press("g")
    expect(page.get_by_test_id("overlay-planes")).to_have_text("Overlay (hidden, G shows)")
    hidden = page.evaluate(READ_PIXELS, [list(p) for p in set_points])
    assert any(colour != [255, 255, 255] for colour in hidden), "the plane is still drawn"
    page.keyboard.press("g")
    shown = page.evaluate(READ_PIXELS, [list(p) for p in set_points])
    assert all(colour == [255, 255, 255] for colour in shown)

    page.evaluate("document.openaimViewport.show(2)")  # image frame 3: no plane covers it
    expect(page.get_by_test_id("overlay-planes")).to_have_text("")
    other = page.evaluate(READ_PIXELS, [list(p) for p in set_points])
    assert any(colour != [255, 255, 255] for colour in other), "a plane drawn on a frame it does not cover"
    assert problems.all() == []
