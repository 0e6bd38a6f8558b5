"""Benchmark: the platform's DICOMweb proxy against Orthanc's own DICOMweb endpoints, same run.

Starts a temporary Orthanc and the viewer on loopback, seeds demo studies, then times the same
requests both ways (a worklist QIDO-RS search, WADO-RS frames, rendered frames, and the platform's
thumbnails against Orthanc's /rendered) and prints a table. The viewer runs in its own process.
Usage: .venv/bin/python -m bench.bench_proxy [--images 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.viewer_process import viewer_process
from openaim.seed import seed
from openaim.settings import Settings
from orthanc import OrthancConnection, OrthancServer
from orthanc.launcher import free_port
from orthanc.seeding import OrthancSeedArchive

USERNAME = "bench"
PASSWORD = secrets.token_urlsafe(16)
Request = Callable[[httpx.Client, str], httpx.Response]  # a client and an instance's path
HEADER = (
    f"| {'request':<48} | count |    req/s |  p50 ms |  p95 ms |\n"
    f"|{'-' * 50}|------:|---------:|--------:|--------:|"
)
NOTES = """
Each round asks for every image once, so after the first round the platform answers frames and
thumbnails from its caches (a thumbnail is drawn once from the stored file, then kept): the rates are
mostly warm. bench_viewer.py times cold and warm frame retrieval separately, with 6 requests in flight.
"""
PNG_ACCEPT = {"Accept": "image/png"}
FRAME_ACCEPT = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}


def signed_in_client(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/signin").text)
    assert token is not None
    response = client.post(
        "/signin", data={"username": USERNAME, "password": PASSWORD, "csrf_token": token.group(1)}
    )
    assert response.status_code == 303, "benchmark sign-in failed"
    return client


def frame_paths(orthanc: OrthancConnection, limit: int) -> list[str]:
    with orthanc.client() as client:
        studies = client.get(
            "/dicom-web/studies", params={"ModalitiesInStudy": "DX", "limit": str(limit)}
        ).json()
        paths = []
        for study in studies:
            study_uid = study["0020000D"]["Value"][0]
            for instance in client.get(f"/dicom-web/studies/{study_uid}/instances").json():
                series_uid = instance["0020000E"]["Value"][0]
                sop_uid = instance["00080018"]["Value"][0]
                paths.append(f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}")
    return paths[:limit]


def timed(requests: list[Callable[[], httpx.Response]]) -> list[float]:
    latencies = []
    for request in requests:
        start = time.perf_counter()
        response = request()
        response.raise_for_status()
        _ = response.content
        latencies.append(time.perf_counter() - start)
    return latencies


def row(name: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    rate = len(latencies) / sum(latencies)
    return (
        f"| {name:<48} | {len(latencies):>5} | {rate:>8.1f} | "
        f"{statistics.median(latencies) * 1000:>7.1f} | {p95 * 1000:>7.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shared = Settings().shared_data_dir
        server = OrthancServer(Path(tmp) / "orthanc", http_port=free_port(), stable_age=5)
        with server as orthanc:
            with OrthancSeedArchive(orthanc) as archive:
                seed(archive, shared, limit=args.images)
            with viewer_process(Path(tmp) / "data", orthanc, USERNAME, PASSWORD) as base:
                paths = frame_paths(orthanc, args.images)
                direct = orthanc.client(timeout=60)
                direct.base_url = httpx.URL(orthanc.dicomweb_url)
                platform = signed_in_client(base)
                cases: list[tuple[str, Request, Request]] = [
                    (
                        "QIDO-RS studies (limit 200)",
                        lambda c, _: c.get("/studies", params={"limit": "200"}),
                        lambda c, _: c.get("/dicomweb/studies", params={"limit": "200"}),
                    ),
                    (
                        "WADO-RS frame (raw pixels)",
                        lambda c, p: c.get(f"{p}/frames/1", headers=FRAME_ACCEPT),
                        lambda c, p: c.get(f"/dicomweb{p}/frames/1", headers=FRAME_ACCEPT),
                    ),
                    (  # PNG both ways: the proxy asks Orthanc for a lossless PNG (Orthanc's */* is JPEG)
                        "WADO-RS rendered (PNG)",
                        lambda c, p: c.get(f"{p}/rendered", headers=PNG_ACCEPT),
                        lambda c, p: c.get(f"/dicomweb{p}/rendered", headers=PNG_ACCEPT),
                    ),
                    (  # the study page's series pictures; Orthanc's nearest is its JPEG /rendered
                        "thumbnail 128 px (vs rendered JPEG)",
                        lambda c, p: c.get(f"{p}/rendered", headers={"Accept": "image/jpeg"}),
                        lambda c, p: c.get(f"/api{p}/thumbnail.png", params={"size": "128"}),
                    ),
                ]
                print(f"\n{len(paths)} chest X-rays, {args.rounds} rounds, one request at a time, loopback\n")
                print(HEADER)
                for name, to_orthanc, to_platform in cases:
                    for label, client, call in (
                        ("Orthanc direct", direct, to_orthanc),
                        ("platform", platform, to_platform),
                    ):
                        requests = [
                            (lambda c=client, p=path, f=call: f(c, p))
                            for _ in range(args.rounds)
                            for path in paths
                        ]
                        timed(requests[:3])  # warm-up
                        print(row(f"{name}: {label}", timed(requests)))
                print(NOTES)


if __name__ == "__main__":
    main()
