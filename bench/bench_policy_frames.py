"""Benchmark: what the AI policy (viewer/reading/ai_policy.py) adds to a cached frame request.

Starts a temporary Orthanc, stores one DX image with an AI SR beside it, signs a radiologist in through
TestClient (in process: the viewer's own work, without a network), asks for the image's frame once (so the
frame cache holds it), then times N more requests two ways:
- ``policy``: as served (the study's series kept in the memo);
- ``memo off``: the memo of the study's series off, so every request asks the archive for them (the worst
  case: a memo miss on every frame).
For the route without the policy, run it on a tree whose viewer/reading/dicomweb.py is the one before the
policy (``git show e23e3a1:viewer/reading/dicomweb.py``): ``policy`` then times that route. (Replacing the
dependency through ``app.dependency_overrides`` is no baseline: FastAPI analyses an override on every
request, which costs more than the policy.)
Usage: .venv/bin/python -m bench.bench_policy_frames [--requests 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.settings import Settings
from orthanc import OrthancServer
from orthanc.launcher import free_port
from tests.conftest import SHARED_DATA
from tests.viewer.ai_fixtures import store_chest_image, store_result_object
from tests.viewer.conftest import BASE_URL, PASSWORD, sign_in
from viewer.access.users import Role, add_user
from viewer.app import create_app

EXPLICIT_LE = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'


def _time(client: TestClient, url: str, requests: int) -> float:
    """Milliseconds per request."""
    start = time.perf_counter()
    for _ in range(requests):
        response = client.get(url, headers={"Accept": EXPLICIT_LE})
        assert response.status_code == 200, response.text
    return (time.perf_counter() - start) * 1000 / requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        server = OrthancServer(root / "orthanc", http_port=free_port(), stable_age=2)
        server.start()
        try:
            image = store_chest_image(server.connection, SHARED_DATA, "20250101", patient_id="BENCH")
            store_result_object(server.connection, image, "SR", "Vendor X", series_number=700)
            url = (
                f"/dicomweb/studies/{image.study_uid}/series/{image.series_uid}"
                f"/instances/{image.instance_uid}/frames/1"
            )
            results: dict[str, list[float]] = {"policy": [], "memo off": []}
            for name in ("policy", "memo off"):
                settings = Settings(
                    data_dir=root / name.replace(" ", "-"),
                    database_url=f"sqlite:///{root / (name.replace(' ', '-') + '.db')}",
                    study_index_follow=False,
                )
                upgrade(settings.resolved_database_url)
                engine = make_engine(settings.resolved_database_url)
                with transaction(session_factory(engine)) as session:
                    add_user(session, "radiologist", PASSWORD, {Role.RADIOLOGIST})
                engine.dispose()
                app = create_app(settings, server.connection)
                with TestClient(app, base_url=BASE_URL) as client:
                    sign_in(client, "radiologist")
                    _time(client, url, 5)  # the frame cache and the memos filled
                    memo = getattr(app.state, "study_series", None)  # absent before the policy
                    if name == "memo off" and memo is None:
                        continue
                    if name == "memo off":  # only the study-series memo off: the session memo stays on
                        memo.seconds = 0.0
                    for _ in range(args.rounds):
                        results[name].append(_time(client, url, args.requests))
        finally:
            server.stop()
    print(f"{args.requests} cached frame requests x {args.rounds} rounds (TestClient), ms/request:")
    for name, values in results.items():
        if not values:
            continue
        low, high = min(values), max(values)
        print(f"  {name:10s} median {statistics.median(values):.3f}  min {low:.3f}  max {high:.3f}")


if __name__ == "__main__":
    main()
