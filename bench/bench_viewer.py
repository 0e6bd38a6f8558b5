"""Benchmark: the reading-room viewer in real Chromium, and its frame path against Orthanc and a peer viewer.

Starts a temporary Orthanc (with the Orthanc Web Viewer plugin loaded as the peer, for this run only) and
the viewer under uvicorn on loopback, stores a 200-slice 512x512 CT series built from the real CT slices in
the shared data and a full-size (1024x1024) NIH chest X-ray, then measures in one run:
  1. frames per second for all CT frames through one client (httpx, a browser's 6 concurrent requests):
     Orthanc's WADO-RS directly, the platform's proxy on a cold cache, and the proxy again (warm);
  2. in Chromium, the platform's viewer: time to first image, time until every frame is loaded, and the
     scroll frame rate through every slice;
  3. in Chromium, the Orthanc Web Viewer plugin's time to first image on the same CT series.
Usage: .venv/bin/python -m bench.bench_viewer [--slices 200] [--concurrency 6] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import pydicom
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bench.viewer_process import viewer_pid, viewer_process
from openaim.seed import cxr_to_dicom, encode
from openaim.settings import Settings
from orthanc import OrthancConnection, OrthancServer
from orthanc.launcher import free_port
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS  # the browser tests' Chromium, started the same way

USERNAME = "bench"
PASSWORD = secrets.token_urlsafe(16)
WEB_VIEWER_PLUGIN = "libOrthancWebViewer.so"
# Raw little-endian pixels, as the platform's viewport asks for them.
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
WINDOW = {"width": 1400, "height": 900}
GOAL_FIRST_IMAGE_MS = 300.0
GOAL_ALL_LOADED_MS = 1500.0  # issue 14: all 200 CT frames in the browser under 1.5 s
# Scrolling at the display rate: slices drawn per second at least this share of the page's own animation
# frame rate, measured in the same page just before (a frame or two lost to timer jitter in 200 is allowed).
GOAL_SCROLL_SHARE_OF_DISPLAY = 0.95
PAGE_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class Series:
    """One stored series: its DICOMweb UIDs, Orthanc's own series ID, and the frame paths under /studies."""

    label: str
    study_uid: str
    series_uid: str
    orthanc_id: str
    instance_paths: list[str]


# --- data --------------------------------------------------------------------------------------------


def ct_series(slices_dir: Path, count: int) -> list[bytes]:
    """``count`` slices of one new CT series, made from the real slices in turn (pixels unchanged).

    Each slice gets new instance UIDs, an instance number and a position one millimetre further along
    the patient axis, as a real thin-slice CT has; the identity is marked as benchmark data.
    """
    sources = [pydicom.dcmread(path) for path in sorted(slices_dir.glob("*.dcm"))]
    study_uid, series_uid, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    x, y, z = (float(v) for v in sources[0].ImagePositionPatient)
    files = []
    for index in range(count):
        ds = copy.deepcopy(sources[index % len(sources)])
        sop_uid = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        # Explicit VR little endian is what the viewport asks for: no transcoding on either path.
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PatientName, ds.PatientID = "BENCH^CT200", "BENCH-CT200"
        ds.StudyDescription = ds.SeriesDescription = f"BENCH {count}-slice CT"
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [x, y, round(z - index, 3)]
        ds.SliceLocation = round(z - index, 3)
        files.append(encode(ds))
    return files


def store(orthanc: OrthancConnection, label: str, files: list[bytes]) -> Series:
    """Stores the files (4 at a time) and returns where their frames are."""
    with orthanc.client(timeout=60) as client, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda data: client.post("/instances", content=data), files))
        for answer in answers:
            answer.raise_for_status()
        orthanc_id = answers[0].json()["ParentSeries"]
        tags = client.get(f"/series/{orthanc_id}/shared-tags", params={"simplify": ""}).json()
        study_uid, series_uid = tags["StudyInstanceUID"], tags["SeriesInstanceUID"]
        instances = client.get(f"/series/{orthanc_id}/instances", params={"expand": ""}).json()
    instances.sort(key=lambda item: int(item["MainDicomTags"].get("InstanceNumber", "0")))
    paths = [
        f"/studies/{study_uid}/series/{series_uid}/instances/{item['MainDicomTags']['SOPInstanceUID']}"
        for item in instances
    ]
    return Series(label, study_uid, series_uid, orthanc_id, paths)


# --- the platform ----------------------------------------------------------------------------------------


async def sign_in(client: httpx.AsyncClient) -> None:
    token = re.search(r'name="csrf_token" value="([^"]+)"', (await client.get("/signin")).text)
    assert token is not None, "no CSRF token on the sign-in page"
    answer = await client.post(
        "/signin", data={"username": USERNAME, "password": PASSWORD, "csrf_token": token.group(1)}
    )
    assert answer.status_code == 303, f"benchmark sign-in failed: {answer.status_code}"


# --- 1. frames per second, one client --------------------------------------------------------------------


async def fetch_all(
    client: httpx.AsyncClient, prefix: str, paths: list[str], concurrency: int, encoding: str | None = None
) -> float:
    """Frames per second for frame 1 of every instance, ``concurrency`` requests in flight.

    httpx asks for gzip as a browser does (``Accept-Encoding``, which page scripts cannot change);
    ``encoding`` replaces that, to show what compression costs.
    """
    gate = asyncio.Semaphore(concurrency)
    headers = {"Accept": FRAME_ACCEPT} | ({"Accept-Encoding": encoding} if encoding else {})

    async def one(path: str) -> None:
        async with gate:
            answer = await client.get(f"{prefix}{path}/frames/1", headers=headers)
            answer.raise_for_status()
            assert len(answer.content) > 512 * 512, f"short frame answer for {path}"

    start = time.perf_counter()
    await asyncio.gather(*(one(path) for path in paths))
    return len(paths) / (time.perf_counter() - start)


PASSES = (
    ("orthanc_direct", "Orthanc WADO-RS directly (gzip accepted)"),
    ("orthanc_direct_identity", "Orthanc WADO-RS directly (identity)"),
    ("proxy_cold", "platform proxy, cold cache"),
    ("proxy_warm", "platform proxy, warm cache"),
    ("proxy_bulk_cold", "platform, series bulk data, cold cache"),
    ("proxy_bulk_warm", "platform, series bulk data, warm cache"),
)


@dataclass
class Pass:
    """One pass over a series: frames per second, and the CPU each server spent per frame."""

    rate: float
    orthanc_cpu_ms: float
    viewer_cpu_ms: float


def cpu_ms(pid: int) -> float:
    """User + system CPU time a process has used, in milliseconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


async def frame_rates(
    orthanc: OrthancConnection,
    base: str,
    rounds: list[tuple[Series, Series]],
    warm_up: Series,
    concurrency: int,
    pids: tuple[int, int],
) -> dict[str, list[Pass]]:
    """Same client, same frames, in rounds on fresh copies of the series (so that each cold pass is cold):
    Orthanc directly (asking for gzip as browsers do, then without), the proxy cold, the proxy warm; then
    another copy as one bulk data answer, cold and warm. On a shared machine one pass says little: the
    rounds interleave the paths, and the table gives medians. ``warm_up``, an already viewed series, opens
    a connection on each path first. ``pids``: Orthanc's and the viewer's, whose CPU time is read around
    each pass (a measure the machine's other load does not change)."""
    limits = httpx.Limits(max_connections=concurrency)
    auth = (orthanc.username, orthanc.password)
    passes: dict[str, list[Pass]] = {key: [] for key, _ in PASSES}

    async def timed(key: str, frames: int, run: Awaitable[float]) -> None:
        before = [cpu_ms(pid) for pid in pids]
        rate = await run
        spent = [(cpu_ms(pid) - start) / frames for pid, start in zip(pids, before, strict=True)]
        passes[key].append(Pass(rate, *spent))

    async with (
        httpx.AsyncClient(base_url=orthanc.url, auth=auth, limits=limits, timeout=60) as direct,
        httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as platform,
    ):
        await sign_in(platform)
        await fetch_all(direct, "/dicom-web", warm_up.instance_paths[:1], 1)
        await fetch_all(platform, "/dicomweb", warm_up.instance_paths[:1], 1)
        for series, bulk_series in rounds:
            paths, count = series.instance_paths, len(series.instance_paths)
            await timed("orthanc_direct", count, fetch_all(direct, "/dicom-web", paths, concurrency))
            identity = fetch_all(direct, "/dicom-web", paths, concurrency, "identity")
            await timed("orthanc_direct_identity", count, identity)
            await timed("proxy_cold", count, fetch_all(platform, "/dicomweb", paths, concurrency))
            await timed("proxy_warm", count, fetch_all(platform, "/dicomweb", paths, concurrency))
            await timed("proxy_bulk_cold", count, fetch_series_bulk(platform, bulk_series))
            await timed("proxy_bulk_warm", count, fetch_series_bulk(platform, bulk_series))
    return passes


async def fetch_series_bulk(client: httpx.AsyncClient, series: Series) -> float:
    """Frames per second for the whole series as WADO-RS series bulk data: one streamed answer, as the
    viewport loads a series after its first image (Orthanc's plugin has no such retrieval). The series'
    description is asked first, as the viewport does (it tells the platform how to decode the frames)."""
    study = f"/studies/{series.study_uid}/series/{series.series_uid}"
    (await client.get(f"/api{study}/images")).raise_for_status()
    start = time.perf_counter()
    received = 0
    async with client.stream("GET", f"/dicomweb{study}", headers={"Accept": FRAME_ACCEPT}) as answer:
        answer.raise_for_status()
        async for chunk in answer.aiter_raw():
            received += len(chunk)
    elapsed = time.perf_counter() - start
    frames = len(series.instance_paths)
    assert received > frames * 512 * 512 * 2, f"short bulk answer: {received} bytes for {frames} frames"
    return frames / elapsed


# --- 2. and 3. Chromium ----------------------------------------------------------------------------------

# Installed before any page script: on every animation frame, each canvas is scaled down to 32x32 and
# read back; the first frame where at least 5% of those samples are not near-black is "first image".
# The same probe runs on both viewers, so their times to first image are measured the same way.
FIRST_IMAGE_PROBE = """
(() => {
  const probe = document.createElement('canvas');
  probe.width = probe.height = 32;
  const context = probe.getContext('2d', { willReadFrequently: true });
  const drawn = () => {
    for (const canvas of document.querySelectorAll('canvas')) {
      if (!canvas.width || !canvas.height) continue;
      context.clearRect(0, 0, 32, 32);
      context.drawImage(canvas, 0, 0, 32, 32);
      const data = context.getImageData(0, 0, 32, 32).data;
      let lit = 0;
      for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 120) lit += 1;
      if (lit >= 0.05 * 32 * 32) return true;
    }
    return false;
  };
  const tick = (now) => {
    if (drawn()) window.benchFirstImageMs = now;
    else requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})();
"""


# Scrolling as a reader does, as fast as the page can: one ArrowDown per animation frame (the viewport's
# own key handler) from the first slice to the last. Counts the slices actually drawn (the viewport's
# image-changed event) over the animation frames that took, and how long each key's handling took.
SCROLL_SCRIPT = """
async () => {
  const viewport = document.openaimViewport;
  const total = viewport.stats().frames_total;
  await viewport.show(0);
  let drawn = 0;
  viewport.addEventListener("image-changed", () => { drawn += 1; });
  const arrowDown = { key: "ArrowDown", bubbles: true, cancelable: true };
  let handling = 0;
  return await new Promise((resolve) => {
    let start = null;
    const step = (now) => {
      if (start === null) start = now;
      if (viewport.index >= total - 1) {
        resolve({ fps: drawn / ((now - start) / 1000), drawn, handling_ms: handling / Math.max(drawn, 1) });
        return;
      }
      const before = performance.now();
      document.dispatchEvent(new KeyboardEvent("keydown", arrowDown));
      handling += performance.now() - before;
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  });
}
"""


# The page's own animation frame rate with nothing to do: the display rate scrolling is judged against.
DISPLAY_RATE_SCRIPT = """
async () => await new Promise((resolve) => {
  let first = null, frames = 0;
  const tick = (now) => {
    if (first === null) first = now; else frames += 1;
    if (now - first >= 1000) resolve(frames / ((now - first) / 1000)); else requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})
"""


# When the series description (/api/.../images) was asked for and had arrived, and when the first frame
# had arrived, in ms after navigation start: where the time to first image goes.
RESOURCE_TIMES = """
() => {
  const entries = performance.getEntriesByType("resource");
  const first = (part, field) => {
    const times = entries.filter((e) => e.name.includes(part)).map((e) => e[field]);
    return times.length ? Math.min(...times) : null;
  };
  return [first("/images", "startTime"), first("/images", "responseEnd"), first("/frames/", "responseEnd")];
}
"""


def new_page(browser: Browser, **options: object) -> Page:
    context = browser.new_context(viewport=WINDOW, **options)  # type: ignore[arg-type]
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    context.add_init_script(FIRST_IMAGE_PROBE)
    return context.new_page()


def first_image_ms(page: Page) -> float:
    page.wait_for_function("() => window.benchFirstImageMs !== undefined")
    return float(page.evaluate("() => window.benchFirstImageMs"))


def web_viewer_first_image(browser: Browser, orthanc: OrthancConnection, series: Series) -> float:
    """The Orthanc Web Viewer plugin's page for the series, Basic auth sent with every request."""
    credentials = {"username": orthanc.username, "password": orthanc.password, "send": "always"}
    page = new_page(browser, http_credentials=credentials)
    try:
        page.goto(f"{orthanc.url}/web-viewer/app/viewer.html?series={series.orthanc_id}", wait_until="commit")
        return first_image_ms(page)
    finally:
        page.context.close()


@dataclass
class ViewerResult:
    """One series opened in the platform's viewer; ``None`` where it could not be measured (see ``note``)."""

    label: str
    frames: int
    first_image_ms: float | None = None
    viewport_first_image_ms: float | None = None
    all_loaded_ms: float | None = None
    scroll_fps: float | None = None
    display_fps: float | None = None
    scroll_ms_per_slice: float | None = None
    description_asked_ms: float | None = None
    description_ms: float | None = None
    first_frame_ms: float | None = None
    note: str = ""


def signed_in_page(browser: Browser, base: str) -> Page:
    page = new_page(browser)
    page.goto(f"{base}/signin")
    page.fill("input[name=username]", USERNAME)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    return page


def platform_viewer(browser: Browser, base: str, series: Series, *, scroll: bool) -> ViewerResult:
    result = ViewerResult(series.label, len(series.instance_paths))
    page = signed_in_page(browser, base)
    try:
        page.goto(f"{base}/studies/{series.study_uid}?series={series.series_uid}", wait_until="commit")
        try:
            page.wait_for_function("() => document.openaimViewport !== undefined", timeout=15_000)
        except PlaywrightTimeoutError:
            result.note = "viewport not available"
            return result
        result.first_image_ms = first_image_ms(page)
        page.wait_for_function(
            "() => { const s = document.openaimViewport.stats();"
            " return s.complete && s.frames_total > 0 && s.frames_loaded >= s.frames_total; }",
            polling="raf",
        )
        stats = page.evaluate("() => document.openaimViewport.stats()")
        result.description_asked_ms, result.description_ms, result.first_frame_ms = page.evaluate(
            RESOURCE_TIMES
        )
        result.viewport_first_image_ms = stats.get("first_image_ms")
        result.all_loaded_ms = stats.get("all_loaded_ms")
        if scroll:
            result.display_fps = page.evaluate(DISPLAY_RATE_SCRIPT)
            scrolled = page.evaluate(SCROLL_SCRIPT)
            result.scroll_fps = scrolled["fps"]
            result.scroll_ms_per_slice = scrolled["handling_ms"]
        return result
    finally:
        page.context.close()


# --- output ----------------------------------------------------------------------------------------------


def cell(value: float | None, unit: str = "") -> str:
    return f"{value:.0f}{unit}" if value is not None else "—"


def judged(value: float | None, goal: float, *, at_least: bool) -> str:
    """The number and whether it meets its goal: "142  yes", "3400  NO", or why there is no number."""
    if value is None:
        return "not measured"
    return f"{value:.0f}  {'yes' if (value >= goal if at_least else value < goal) else 'NO'}"


def print_viewer_table(results: list[ViewerResult], peer_ms: float | None, load: str) -> None:
    print(f"\nThe platform's viewer in Chromium (headless, loopback, one run; load before it: {load})")
    print("Each cell: the value, then whether it meets the goal in the header.\n")
    print(
        "| series                | first image ms (<300) | all frames loaded ms (<1500) "
        "| scroll fps (>=0.95 x display rate) |"
    )
    print(
        "|-----------------------|----------------------:|-----------------------------:"
        "|-----------------------------------:|"
    )
    for r in results:
        scroll = "one image"
        if r.frames > 1:
            display = r.display_fps or 60.0
            scroll = judged(r.scroll_fps, GOAL_SCROLL_SHARE_OF_DISPLAY * display, at_least=True)
            scroll = f"{scroll} (of {display:.0f})"
        first = judged(r.first_image_ms, GOAL_FIRST_IMAGE_MS, at_least=False)
        loaded = judged(r.all_loaded_ms, GOAL_ALL_LOADED_MS, at_least=False)
        label = f"{r.label} ({r.frames} fr.)"
        print(f"| {label:<21} | {first:>21} | {loaded:>28} | {scroll:>34} |")
    for r in results:
        if r.note:
            print(f"{r.label}: {r.note}")
        if r.viewport_first_image_ms is not None:
            print(f"{r.label}: the viewport's own stats() first_image_ms = {r.viewport_first_image_ms:.0f}")
        if None not in (r.description_asked_ms, r.description_ms, r.first_frame_ms):
            print(
                f"{r.label}: series description asked at {r.description_asked_ms:.0f} ms, "
                f"in at {r.description_ms:.0f} ms; first frame in at {r.first_frame_ms:.0f} ms"
            )
        if r.scroll_ms_per_slice is not None:
            print(f"{r.label}: handling one ArrowDown (draw included) took {r.scroll_ms_per_slice:.1f} ms")
    print(
        f"\nTime to first image, same CT series: platform {cell(results[0].first_image_ms, ' ms')}, "
        f"Orthanc Web Viewer plugin {cell(peer_ms, ' ms')}"
    )


def print_rate_table(passes: dict[str, list[Pass]], frames: int, concurrency: int) -> None:
    rounds = len(passes["orthanc_direct"])
    print(
        f"\nWADO-RS, {frames} CT frames (512x512, 16-bit), one httpx client, {concurrency} in flight; "
        f"medians of {rounds} rounds (each on a fresh copy of the series)\n"
    )
    print(
        "| path                                     | frames/s | vs direct (range)   | proxy >= direct? "
        "| Orthanc CPU ms/frame | viewer CPU ms/frame |"
    )
    print(
        "|------------------------------------------|---------:|---------------------|------------------"
        "|---------------------:|--------------------:|"
    )
    direct = passes["orthanc_direct"]
    for key, name in PASSES:
        runs = passes[key]
        # Each round's pass against the direct pass of the same round: the machine's load then was the same.
        ratios = sorted(run.rate / peer.rate for run, peer in zip(runs, direct, strict=True))
        ratio = statistics.median(ratios)
        goal = ("yes" if ratio >= 1.0 else "NO") if key.startswith("proxy") else ""
        spread = f"{ratio:.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"
        print(
            f"| {name:<40} | {statistics.median(run.rate for run in runs):>8.0f} | {spread:<19} | {goal:<16} "
            f"| {statistics.median(run.orthanc_cpu_ms for run in runs):>20.2f} "
            f"| {statistics.median(run.viewer_cpu_ms for run in runs):>19.2f} |"
        )


FOOTNOTES = """
Notes: first image = the requestAnimationFrame timestamp (ms after navigation start) of the first frame in
which a page canvas, scaled to 32x32, has at least 5% of samples that are not near-black; the same probe
runs in both viewers (the platform's viewport also reports its own first_image_ms, printed under the table).
"All frames loaded" is the viewport's stats().all_loaded_ms, also after navigation start. Scroll fps: one
ArrowDown keydown (the viewport's own handler) per animation frame from the first slice to the last, slices
drawn / elapsed time; it cannot exceed the display rate (the page's animation frame rate with nothing to
do, measured just before: "of N"; 60 Hz in headless Chromium), so the time to handle
one key, draw included, is printed too. The Orthanc Web Viewer gets the Orthanc credentials with every
request. The CT is the 3 real shared-data GE slices repeated with new UIDs and positions, stored as Explicit
VR Little Endian; the chest X-ray is a 1024x1024 NIH image converted by openaim.seed.cxr_to_dicom (not
upsampled). The frame-rate series is a second copy of the CT, so that the proxy's cold pass is cold even
after Chromium opened the first. Orthanc gzips every answer when the client accepts gzip
(HttpCompressionEnabled, on by default): a browser always does, so "gzip accepted" is what a browser
talking to Orthanc gets; "identity" shows that cost. The goal column compares the proxy with the first row
(same client, same headers). "Series bulk data" is WADO-RS Retrieve Series with an application/octet-stream
Accept: every frame in one streamed answer, which the viewport uses after the first image; Orthanc's
DICOMweb plugin refuses that retrieval (400), so its best way, one request per frame, is the peer.
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3, help="frame-rate rounds, each on fresh copies")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    shared = Settings().shared_data_dir
    # The machine may be shared: its load before the run says how far to trust one run's numbers.
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        server = OrthancServer(
            Path(tmp) / "orthanc", http_port=free_port(), stable_age=5, extra_plugins=(WEB_VIEWER_PLUGIN,)
        )
        with server as orthanc:
            slices = shared / "dicom" / "ct_3slice"
            ct = store(orthanc, "CT", ct_series(slices, args.slices))
            rounds = [
                (
                    store(orthanc, f"CT copy {number}", ct_series(slices, args.slices)),
                    store(orthanc, f"CT bulk copy {number}", ct_series(slices, args.slices)),
                )
                for number in range(1, args.rounds + 1)
            ]
            png = sorted((shared / "cxr14" / "full").glob("*.png"))[0]
            cxr = store(orthanc, "chest X-ray", [encode(cxr_to_dicom(png))])
            with viewer_process(Path(tmp) / "data", orthanc, USERNAME, PASSWORD) as base:
                with sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                    results = [
                        platform_viewer(browser, base, ct, scroll=True),
                        platform_viewer(browser, base, cxr, scroll=False),
                    ]
                    peer_ms = web_viewer_first_image(browser, orthanc, ct)
                    browser.close()
                assert server.process is not None
                pids = (server.process.pid, viewer_pid())
                rates = asyncio.run(frame_rates(orthanc, base, rounds, ct, args.concurrency, pids))
    print_viewer_table(results, peer_ms, load)
    print_rate_table(rates, args.slices, args.concurrency)
    print(FOOTNOTES)
    if args.json:
        record = {
            "viewer": [asdict(r) for r in results],
            "web_viewer_first_image_ms": peer_ms,
            "frame_passes": {key: [asdict(run) for run in runs] for key, runs in rates.items()},
            "load_average_before": load,
        }
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
