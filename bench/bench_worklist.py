"""Benchmark: the worklist page over a million studies, on SQLite and on PostgreSQL, against a goal of 300 ms.

For each database: migrate a fresh one, fill the study index with ``--studies`` studies and what the
worklist reads beside them (jobs, results of a clinical and a shadow model, unrouted series, reads:
bench/worklist_volume.py), then ask the viewer (in process, FastAPI's test client, a signed-in reader) for
worklist pages: the default page, each filter, a search, a date range, the last page, and the whole page
as a reader first opens it (audited). Each case runs ``--runs`` times after one warm-up; the table gives
the median and the slowest, and the time of the page's two SQL queries alone (count and page).

Peers, measured in the same run: the same pages over ``--peer-studies`` studies (the archive a hundred
times smaller), and the old path, which asked Orthanc for 200 studies (QIDO-RS, ``limit=200``) and the
database for those 200 studies' AI status, flag and read status (viewer/reading/study_status.py): it was
as fast as Orthanc answers, and wrong beyond 200 studies (a flag on the 201st never showed). It runs against
a real Orthanc holding ``--orthanc-studies`` studies whose UIDs are the first ones of the volume.

PostgreSQL: a new database on the server ``--postgres-url`` names, dropped afterwards (bench_feedback's
``fresh_postgres``); without a URL the PostgreSQL rows say why they were skipped.
Usage: .venv/bin/python -m bench.bench_worklist [--studies 1000000] [--peer-studies 10000]
                                        [--orthanc-studies 1000] [--runs 15] [--postgres-url URL]
                                        [--databases sqlite,postgresql] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import httpx
import pydicom
from fastapi.testclient import TestClient
from pydicom.uid import UID
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from bench.bench_feedback import fresh_postgres
from bench.worklist_volume import fill, study_uid
from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.settings import REPO_ROOT, Settings
from orthanc import OrthancConnection, OrthancServer
from orthanc.launcher import free_port
from viewer.access.users import Role, add_user
from viewer.app import create_app
from viewer.reading.study_status import AIStatus, Triage, study_statuses
from viewer.reading.worklist import Filters, find_page

GOAL_MS = 300.0
PASSWORD = secrets.token_urlsafe(16)
READER = "bench-worklist-radiologist"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# (name, query): what a reader asks the worklist for; the middle and last pages are filled in per volume
CASES: list[tuple[str, dict[str, str]]] = [
    ("default page (urgent first)", {}),
    ("flag = urgent", {"flag": "urgent"}),
    ("flag = priority", {"flag": "priority"}),
    ("AI status = failed", {"ai": "failed"}),
    ("unread", {"read": "false"}),
    ("modality = CT", {"modality": "CT"}),
    ("modality = PT (1%, in CT\\PT)", {"modality": "PT"}),
    ("search: patient ID", {"q": "P0000010"}),
    ("search: accession A0000002*", {"q": "A0000002*"}),
    ("one month, unread", {"date_from": "2020-03-01", "date_to": "2020-03-31", "read": "false"}),
]
OLD_STUDY_FIELDS = ("00081030", "00080061", "00201208", "00201206")  # what the old search asked for


@dataclass
class Case:
    name: str
    request_ms: list[float] = field(default_factory=list)
    sql_ms: list[float] = field(default_factory=list)
    rows: int = 0
    total: int = 0


@dataclass
class Run:
    label: str
    studies: int
    fill_s: float = 0.0
    cases: list[Case] = field(default_factory=list)
    skipped: str = ""


def measure(label: str, url: str, studies: int, runs: int, data_dir: Path) -> Run:
    """Fill a migrated database and time every case through the app."""
    upgrade(url)
    started = time.perf_counter()
    fill(url, studies)
    run = Run(label, studies, fill_s=time.perf_counter() - started)
    engine = make_engine(url)
    factory = session_factory(engine)
    with transaction(factory) as db:
        add_user(db, READER, PASSWORD, {Role.RADIOLOGIST})
    settings = Settings(data_dir=data_dir, database_url=url, cookie_secure=False, study_index_follow=False)
    # The worklist no longer asks the archive: a connection to nowhere shows it.
    nowhere = OrthancConnection(url=f"http://127.0.0.1:{free_port()}", username="none", password=PASSWORD)
    pages = -(-studies // 100)
    cases = [
        *CASES,
        ("middle page (OFFSET half the list)", {"page": str(max(1, pages // 2))}),
        ("last page (read from the end)", {"page": str(pages)}),
    ]
    with TestClient(create_app(settings, nowhere), base_url="http://testserver") as client:
        sign_in(client)
        for name, query in cases:
            run.cases.append(_time_case(client, factory, name, query, runs))
        opened = Case("whole page as first opened (audited)")
        for attempt in range(runs + 1):
            started = time.perf_counter()
            response = client.get("/worklist")
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, response.text[:500]
            if attempt:
                opened.request_ms.append(elapsed)
        opened.rows = response.text.count('data-testid="worklist-row"')
        opened.total = studies
        run.cases.append(opened)
    engine.dispose()
    return run


def _time_case(
    client: TestClient, factory: sessionmaker[Session], name: str, query: dict[str, str], runs: int
) -> Case:
    case = Case(name)
    # The table's own refresh (htmx, not audited): what a reader's browser asks every 4 s.
    headers = {"HX-Request": "true", "HX-Trigger": "worklist-rows"}
    filters = _filters(query)
    for attempt in range(runs + 1):
        started = time.perf_counter()
        response = client.get("/worklist", params=query, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.text[:500]
        with factory() as db:
            started = time.perf_counter()
            page = find_page(db, filters, int(query.get("page", "1")))
            sql = (time.perf_counter() - started) * 1000
        if attempt:  # the first is the warm-up
            case.request_ms.append(elapsed)
            case.sql_ms.append(sql)
    case.rows = response.text.count('data-testid="worklist-row"')
    case.total = page.total
    return case


def _filters(query: dict[str, str]) -> Filters:
    """The worklist's filters from a case's query, as the route reads them."""

    def day(key: str) -> date | None:
        return date.fromisoformat(query[key]) if key in query else None

    read = {"true": True, "false": False}.get(query.get("read", ""))
    return Filters(
        q=query.get("q", ""),
        modality=query.get("modality", ""),
        date_from=day("date_from"),
        date_to=day("date_to"),
        flag=Triage(query["flag"]) if "flag" in query else None,
        ai=AIStatus(query["ai"]) if "ai" in query else None,
        read=read,
    )


def sign_in(client: TestClient) -> None:
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/signin").text)
    assert token, "no CSRF token on the sign-in page"
    form = {"username": READER, "password": PASSWORD, "csrf_token": token.group(1), "next": "/worklist"}
    answer = client.post("/signin", data=form, follow_redirects=False)
    assert answer.status_code == 303, answer.text[:500]


# --- the old path: Orthanc's 200, then their statuses ----------------------------------------------------


def measure_old_path(url: str, orthanc: OrthancConnection, studies: int, runs: int) -> Run:
    """QIDO-RS limit=200 (as the old worklist asked) and the statuses of those 200 from the database."""
    _store_studies(orthanc, studies)
    run = Run("old path: Orthanc QIDO limit=200 + statuses", studies)
    engine = make_engine(url)
    factory = session_factory(engine)
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("includefield", tag) for tag in OLD_STUDY_FIELDS
    ]
    params.append(("limit", "200"))
    qido, both = Case("QIDO-RS limit=200"), Case("QIDO-RS + statuses of the 200 (old page's data)")
    with httpx.Client(auth=(orthanc.username, orthanc.password), timeout=60) as client:
        for attempt in range(runs + 1):
            started = time.perf_counter()
            answer = client.get(
                f"{orthanc.dicomweb_url}/studies", params=params, headers={"Accept": "application/dicom+json"}
            )
            asked = (time.perf_counter() - started) * 1000
            uids = [item["0020000D"]["Value"][0] for item in answer.json()]
            with factory() as db:
                started = time.perf_counter()
                statuses = study_statuses(db, uids)
                status_ms = (time.perf_counter() - started) * 1000
            if attempt:
                qido.request_ms.append(asked)
                both.request_ms.append(asked + status_ms)
                both.sql_ms.append(status_ms)
    qido.rows = both.rows = len(statuses)
    qido.total = both.total = len(statuses)
    run.cases = [qido, both]
    engine.dispose()
    return run


def _store_studies(orthanc: OrthancConnection, studies: int) -> None:
    """The real DX chest image as the volume's first ``studies`` studies (their UIDs), in Orthanc."""
    source = pydicom.dcmread(SHARED_DATA / "dicom" / "dx_chest" / "dx_image.dcm")
    with orthanc.client() as client:
        for number in range(studies):
            source.StudyInstanceUID = study_uid(number)
            source.SeriesInstanceUID = f"{study_uid(number)}.1"
            source.SOPInstanceUID = source.file_meta.MediaStorageSOPInstanceUID = UID(
                f"{study_uid(number)}.1.1"
            )
            source.PatientID = f"P{number // 2:07d}"
            buffer = io.BytesIO()
            source.save_as(buffer, enforce_file_format=True)
            client.post("/instances", content=buffer.getvalue()).raise_for_status()


# --- output -------------------------------------------------------------------------------------------


def print_table(runs: list[Run], load_before: str) -> None:
    print(
        f"\nWorklist page, goal {GOAL_MS:.0f} ms (load average before: {load_before}; {os.cpu_count()} cores)"
    )
    header = (
        f"{'database':<34} {'studies':>9} {'case':<44} {'p50 ms':>8} {'max ms':>8} {'SQL p50':>8} "
        f"{'rows':>5} {'of':>9}  goal"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        print_run(run)


def print_run(run: Run, flush: bool = False) -> None:
    """One run's rows (also printed as each run ends: a million-study run takes minutes)."""
    if run.skipped:
        print(f"{run.label:<34} {run.studies:>9,} skipped: {run.skipped}", flush=flush)
        return
    if run.fill_s:
        print(f"{run.label:<34} {run.studies:>9,} (filled in {run.fill_s:.0f} s)", flush=flush)
    for case in run.cases:
        p50 = statistics.median(case.request_ms)
        sql = f"{statistics.median(case.sql_ms):8.1f}" if case.sql_ms else f"{'':>8}"
        verdict = "ok" if max(case.request_ms) < GOAL_MS else "OVER"
        print(
            f"{run.label:<34} {run.studies:>9,} {case.name:<44} {p50:8.1f} {max(case.request_ms):8.1f} "
            f"{sql} {case.rows:>5} {case.total:>9,}  {verdict}",
            flush=flush,
        )


@contextmanager
def _postgres(url: str | None) -> Iterator[str | None]:
    if not url:
        yield None
        return
    with fresh_postgres(url) as scratch:
        yield scratch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=1_000_000)
    parser.add_argument("--peer-studies", type=int, default=10_000)
    parser.add_argument("--orthanc-studies", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OPENAIM_BENCH_POSTGRES_URL"),
        help="a PostgreSQL server to create a scratch database on (default: $OPENAIM_BENCH_POSTGRES_URL)",
    )
    parser.add_argument(
        "--databases",
        default="sqlite,postgresql",
        help="which to measure, comma-separated (a million-study fill takes minutes on each)",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    databases = set(args.databases.split(","))
    load_before = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for size in (args.peer_studies, args.studies):
            sqlite_url = f"sqlite:///{root / f'worklist-{size}.db'}"
            if "sqlite" in databases or size == args.peer_studies:  # the old path's peer reads it
                runs.append(measure("SQLite", sqlite_url, size, args.runs, root / "data"))
                print_run(runs[-1], flush=True)
            if "postgresql" not in databases:
                continue
            try:
                with _postgres(args.postgres_url) as url:
                    if url is None:
                        runs.append(
                            Run("PostgreSQL", size, skipped="no --postgres-url / $OPENAIM_BENCH_POSTGRES_URL")
                        )
                    else:
                        runs.append(measure("PostgreSQL", url, size, args.runs, root / "data"))
                        print_run(runs[-1], flush=True)
            except DBAPIError as error:
                runs.append(
                    Run("PostgreSQL", size, skipped=f"server unreachable ({error.__class__.__name__})")
                )
        peer_url = f"sqlite:///{root / f'worklist-{args.peer_studies}.db'}"
        with OrthancServer(root / "orthanc", http_port=free_port(), stable_age=5) as orthanc:
            runs.append(measure_old_path(peer_url, orthanc, args.orthanc_studies, args.runs))
    print_table(runs, load_before)
    if args.json:
        args.json.write_text(
            json.dumps({"runs": [asdict(run) for run in runs], "load_average_before": load_before}, indent=2)
        )


if __name__ == "__main__":
    main()
