"""The canvas viewport in a real Chromium against the real platform and Orthanc: the grey (and colour)
values on the canvas equal what the DICOM standard's modality LUT and window formula give for the file's
pixels (pydicom), through window drags, slice scrolling, MONOCHROME1, signed CT, RGB, multi-frame and a
JPEG 2000 file that Orthanc itself could not transcode without crashing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from playwright.sync_api import Page, expect

from orthanc import OrthancConnection

from .conftest import PASSWORD, USERNAME, PageProblems

pytestmark = pytest.mark.browser

DICOM = Path("dicom")
LOADED = (
    "() => { const v = document.openaimViewport;"
    " return !!v && v.stats().complete && v.stats().frames_total > 0"
    " && v.stats().frames_loaded === v.stats().frames_total"
    " && v.stats().first_image_ms !== null; }"
)
READ_PIXELS = """(points) => {
  const v = document.openaimViewport;
  const ctx = v.canvas.getContext('2d');
  return points.map(([x, y]) => {
    const p = v.imageToCanvas(x + 0.5, y + 0.5);
    if (p.x < 0 || p.y < 0 || p.x >= v.canvas.width || p.y >= v.canvas.height) return null;
    return Array.from(ctx.getImageData(Math.floor(p.x), Math.floor(p.y), 1, 1).data.slice(0, 3));
  });
}"""


def voi_linear(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, output range 0..255."""
    width = max(width, 1.0)
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    y = np.where(x <= center - 0.5 - (width - 1) / 2, 0, y)
    return np.where(x > center - 0.5 + (width - 1) / 2, 255, y)


def expected_grey(ds: pydicom.Dataset, pixels: np.ndarray, center: float, width: float) -> np.ndarray:
    modality = pixels.astype(float) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    grey = voi_linear(modality, center, width)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        grey = 255 - grey
    return np.floor(grey + 0.5).astype(int)


def sample_points(ds: pydicom.Dataset, count: int = 40) -> list[tuple[int, int]]:
    rng = np.random.default_rng(7)
    return [(int(rng.integers(0, ds.Columns)), int(rng.integers(0, ds.Rows))) for _ in range(count)]


def visible(page: Page, points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The points on the canvas (a large image at 1:1 overflows it)."""
    drawn = page.evaluate(READ_PIXELS, [list(p) for p in points])
    return [point for point, colour in zip(points, drawn, strict=True) if colour is not None]


def canvas_grey(page: Page, points: list[tuple[int, int]]) -> np.ndarray:
    rgb = np.array(page.evaluate(READ_PIXELS, [list(p) for p in points]))
    assert (rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all(), "a grey image drew colours"
    return rgb[:, 0]


def assert_grey(page: Page, ds: pydicom.Dataset, pixels: np.ndarray, window: dict[str, float]) -> None:
    points = visible(page, sample_points(ds))
    assert len(points) >= 20, "too few sample points on the canvas"
    expected = expected_grey(ds, pixels, window["center"], window["width"])
    wanted = np.array([expected[y, x] for x, y in points])
    drawn = canvas_grey(page, points)
    assert np.abs(drawn - wanted).max() <= 1, list(zip(points, drawn.tolist(), wanted.tolist(), strict=True))
    assert len(set(wanted.tolist())) > 3, "the sample points do not test the window (all one grey)"


@pytest.fixture
def signed_in(page: Page, viewer_url: str) -> Page:
    page.goto(f"{viewer_url}/signin")
    page.get_by_label("User name").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("signed-in-user")).to_be_visible()  # wherever sign-in leads
    return page


def open_series(page: Page, viewer_url: str, ds: pydicom.Dataset) -> None:
    page.goto(f"{viewer_url}/studies/{ds.StudyInstanceUID}?series={ds.SeriesInstanceUID}")
    page.wait_for_function(LOADED)
    page.wait_for_load_state("networkidle")  # the AI panel has put its overlays (e.g. a foreign SEG) on
    page.evaluate("document.openaimViewport.setAllOverlaysVisible(false)")  # the image's own pixels only
    page.keyboard.press("o")  # 1:1, so that every image pixel is one canvas pixel


def read_all(shared_data: Path, folder: str) -> list[pydicom.Dataset]:
    """The series in display order: ascending along the slice normal (viewer/reading/slice_order.py)."""
    files = [pydicom.dcmread(path) for path in sorted((shared_data / DICOM / folder).glob("*.dcm"))]

    def distance(ds: pydicom.Dataset) -> float:
        orientation = np.array(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        return float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float)))

    return sorted(files, key=distance)


def test_window_drag_changes_grey_values_as_the_window_formula_says(
    signed_in: Page, viewer_url: str, shared_data: Path, problems: PageProblems, artifacts: Path
) -> None:
    page = signed_in
    ct = read_all(shared_data, "ct_3slice")
    assert ct[0].PixelRepresentation == 1 and ct[0].pixel_array.min() < 0  # a signed CT with negatives
    open_series(page, viewer_url, ct[0])
    window = page.evaluate("document.openaimViewport.window")
    assert window == {"center": float(ct[0].WindowCenter), "width": float(ct[0].WindowWidth)}
    assert_grey(page, ct[0], ct[0].pixel_array, window)
    expect(page.get_by_test_id("window")).to_have_text("C 40 / W 400")
    page.screenshot(path=artifacts / "viewport-ct-window-file.png")

    box = page.locator("#viewport canvas").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 100, y + 50, steps=5)
    page.mouse.up()
    step = 400 / 256  # windowStep(width) in viewport.js: width / 256 modality units per screen pixel
    dragged = page.evaluate("document.openaimViewport.window")
    assert math.isclose(dragged["width"], 400 + 100 * step) and math.isclose(
        dragged["center"], 40 + 50 * step
    )
    assert_grey(page, ct[0], ct[0].pixel_array, dragged)
    page.screenshot(path=artifacts / "viewport-ct-window-dragged.png")

    page.keyboard.press("1")  # CT lung preset
    assert page.evaluate("document.openaimViewport.window") == {"center": -600, "width": 1500}
    assert_grey(page, ct[0], ct[0].pixel_array, {"center": -600, "width": 1500})
    page.screenshot(path=artifacts / "viewport-ct-lung-preset.png")
    assert problems.all() == []


def test_wheel_and_arrow_keys_scroll_through_slices(
    signed_in: Page, viewer_url: str, shared_data: Path, problems: PageProblems, artifacts: Path
) -> None:
    page = signed_in
    ct = read_all(shared_data, "ct_3slice")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    open_series(page, viewer_url, ct[0])
    window = {"center": 40.0, "width": 400.0}
    expect(page.get_by_test_id("slice")).to_have_text("Image 1/3")
    # The first frame alone, then the rest of the series in one bulk data answer, not frame by frame.
    page.wait_for_function(LOADED)
    assert sum("/frames/" in url for url in asked) == 1, asked
    assert sum(url.endswith(f"/series/{ct[0].SeriesInstanceUID}") for url in asked) == 1, asked
    page.evaluate(
        "window.changes = [];"
        "document.addEventListener('openaim:image-changed', (e) => window.changes.push(e.detail))"
    )

    box = page.locator("#viewport canvas").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 120)
    expect(page.get_by_test_id("slice")).to_have_text("Image 2/3")
    assert_grey(page, ct[1], ct[1].pixel_array, window)
    page.screenshot(path=artifacts / "viewport-ct-slice-2.png")

    page.keyboard.press("ArrowDown")
    expect(page.get_by_test_id("slice")).to_have_text("Image 3/3")
    assert_grey(page, ct[2], ct[2].pixel_array, window)
    page.keyboard.press("Home")
    expect(page.get_by_test_id("slice")).to_have_text("Image 1/3")
    assert_grey(page, ct[0], ct[0].pixel_array, window)
    changes = page.evaluate("window.changes")
    assert [c["instance_uid"] for c in changes] == [str(ds.SOPInstanceUID) for ds in (ct[1], ct[2], ct[0])]
    assert {c["count"] for c in changes} == {3}
    assert problems.all() == []


def test_monochrome1_is_inverted_with_the_files_window(
    signed_in: Page, viewer_url: str, shared_data: Path, problems: PageProblems, artifacts: Path
) -> None:
    page = signed_in
    dx = pydicom.dcmread(shared_data / DICOM / "dx_chest" / "dx_image.dcm")
    assert dx.PhotometricInterpretation == "MONOCHROME1"
    open_series(page, viewer_url, dx)
    window = page.evaluate("document.openaimViewport.window")
    assert window == {"center": 128.0, "width": 256.0}
    assert_grey(page, dx, dx.pixel_array, window)
    darkest = np.unravel_index(np.argmin(dx.pixel_array), dx.pixel_array.shape)
    assert canvas_grey(page, [(int(darkest[1]), int(darkest[0]))])[0] >= 250  # lowest value: white
    page.screenshot(path=artifacts / "viewport-dx-monochrome1.png")
    assert problems.all() == []


def test_rgb_and_multiframe_render(
    signed_in: Page, viewer_url: str, shared_data: Path, problems: PageProblems, artifacts: Path
) -> None:
    page = signed_in
    folder = shared_data / DICOM / "transfer_syntax"
    rgb = pydicom.dcmread(folder / "pydicom_SC_rgb_rle.dcm")
    open_series(page, viewer_url, rgb)
    page.evaluate(f"document.openaimViewport.goTo('{rgb.SOPInstanceUID}')")
    page.wait_for_function(f"document.openaimViewport.current.image.instance_uid === '{rgb.SOPInstanceUID}'")
    points = sample_points(rgb)
    drawn = np.array(page.evaluate(READ_PIXELS, [list(p) for p in points]))
    wanted = np.array([rgb.pixel_array[y, x] for x, y in points])
    assert np.array_equal(drawn, wanted)
    assert len({tuple(c) for c in wanted.tolist()}) > 3
    page.screenshot(path=artifacts / "viewport-rgb.png")

    mr = pydicom.dcmread(folder / "emri_small.dcm")
    open_series(page, viewer_url, mr)
    expect(page.get_by_test_id("slice")).to_have_text("Image 1/10 (frame 1/10)")
    page.keyboard.press("End")
    expect(page.get_by_test_id("slice")).to_have_text("Image 10/10 (frame 10/10)")
    assert "WindowCenter" not in mr  # no window in the file: the range of the first frame shown, kept
    first, frame = mr.pixel_array[0], mr.pixel_array[9]
    window = page.evaluate("document.openaimViewport.window")
    assert window == {
        "center": (int(first.min()) + int(first.max())) / 2,
        "width": int(first.max() - first.min()),
    }
    assert_grey(page, mr, frame, window)
    page.keyboard.press("r")  # reset: the range of the frame now shown
    page.keyboard.press("o")
    window = page.evaluate("document.openaimViewport.window")
    assert window == {
        "center": (int(frame.min()) + int(frame.max())) / 2,
        "width": int(frame.max() - frame.min()),
    }
    assert_grey(page, mr, frame, window)
    page.screenshot(path=artifacts / "viewport-multiframe-mr.png")
    assert problems.all() == []


def test_jpeg_2000_renders_and_orthanc_survives(
    signed_in: Page, viewer_url: str, shared_data: Path, orthanc: OrthancConnection, artifacts: Path
) -> None:
    page = signed_in
    mr = pydicom.dcmread(shared_data / DICOM / "transfer_syntax" / "MR2_J2KR.dcm")
    open_series(page, viewer_url, mr)
    window = page.evaluate("document.openaimViewport.window")
    assert window == {"center": float(mr.WindowCenter), "width": float(mr.WindowWidth)}
    assert_grey(page, mr, mr.pixel_array, window)
    page.screenshot(path=artifacts / "viewport-mr-jpeg2000.png")
    with orthanc.client(timeout=5) as client:
        assert client.get("/system").status_code == 200


def test_study_page_has_no_console_errors_and_overlays_follow_the_image(
    signed_in: Page, viewer_url: str, shared_data: Path, problems: PageProblems, artifacts: Path
) -> None:
    page = signed_in
    ct = read_all(shared_data, "ct_3slice")
    open_series(page, viewer_url, ct[0])
    expect(page.locator(".series-thumb.current img")).to_have_js_property("complete", True)
    before = canvas_grey(page, [(100, 100)])[0]
    page.evaluate(
        """(uid) => document.openaimViewport.setOverlays([
            {id: 'box1', instance_uid: uid, frame: 1, kind: 'box', rect: [90, 90, 110, 110],
             label: 'Finding <b>1</b>', colour: '#ff0000'},
        ])""",
        str(ct[0].SOPInstanceUID),
    )
    edge = np.array(page.evaluate(READ_PIXELS, [[90, 100]]))[0]
    assert edge[0] > 200 and edge[1] < 80, f"the box edge is not drawn red: {edge}"
    assert canvas_grey(page, [(100, 100)])[0] == before  # inside the box: the image
    page.evaluate("document.openaimViewport.setOverlayVisible('box1', false)")
    assert canvas_grey(page, [(90, 100)]).size == 1  # back to grey
    page.screenshot(path=artifacts / "viewport-ct-study-page.png", full_page=True)
    assert problems.all() == []
