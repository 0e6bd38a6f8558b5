"""Benchmark: 50 readers saving second-reader feedback at once, on SQLite and on PostgreSQL.

For each database: migrate a fresh one, add 50 radiologists and a set of studies with AI results (database
rows, as the inference service leaves them), start the viewer under uvicorn in its own process on loopback
(one process, one worker, as `openaim serve` runs it), sign the 50 readers in (one cookie jar each), then for
``--seconds`` every reader saves feedback as fast as the answers come back (no think time: a worst case far
above a real reading room): verdicts on AI findings, disagreements with a reason and a comment, edits of its
last verdict (a new version), missed findings with a box, study triage feedback, and deliberate retries of its
last save (same client id: must answer 200 and store nothing). Every answer's latency and status is
recorded; afterwards the rows are counted in the database: every save answered 201 must be there exactly
once, and every (reader, study, target) must hold versions 1..n, each pointing at the one before.
The peer row, measured in the same run: GET /healthz under the same 50-client load, the app's floor (and
the load client's own overhead: client and server share the machine's cores).

PostgreSQL: a new database (``openaim_bench_<pid>``) is created on the server that ``--postgres-url`` names
and dropped afterwards (a new schema if creating databases is not allowed); the named database is never
written to. Without a URL or a reachable server the PostgreSQL row says why it was skipped.
Usage: .venv/bin/python -m bench.bench_feedback [--seconds 60] [--readers 50] [--studies 100]
                                          [--postgres-url URL] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import random
import re
import secrets
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, make_url, select, text
from sqlalchemy.exc import DBAPIError

from inference.catalog import Mode, ModelVersion
from inference.jobs import Job, JobState
from inference.results import Finding, InferenceResult
from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.settings import Settings
from orthanc import OrthancConnection, OrthancServer
from orthanc.launcher import free_port
from viewer.access.users import Role, add_user
from viewer.app import create_app
from viewer.feedback.records import Feedback

PASSWORD = secrets.token_urlsafe(16)
LABELS = ("Pneumothorax", "Effusion", "Nodule")
FALSE_POSITIVE_REASONS = (
    "false_positive_artefact",
    "false_positive_normal_variant",
    "false_positive_other_finding",
)
# What a reader does next, by share of its saves (the rest: a verdict on a random finding).
SHARES = {"retry": 0.10, "edit": 0.15, "missed": 0.10, "study": 0.15}
REQUEST_TIMEOUT_S = 60.0
SIGN_IN_AT_ONCE = 5  # sign-in is not what is measured: argon2 checks are slow by design
SIGN_IN_TRIES = 100
KEEPALIVE_S = 2.0


@dataclass(frozen=True)
class Study:
    """One study with one AI result, as the feedback API names them."""

    study_uid: str
    instance_uid: str
    result_id: str  # "platform-<id>"
    finding_ids: tuple[str, ...]  # "finding-<id>"


# --- the database -------------------------------------------------------------------------------------


@contextmanager
def fresh_postgres(url: str) -> Iterator[str]:
    """A new database on the server ``url`` names, dropped afterwards; a new schema in the named database
    where this role may not create databases. Raises ``DBAPIError`` when the server cannot be reached."""
    name = f"openaim_bench_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as connection:
            try:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
                drop, bench_url = (
                    f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                    make_url(url).set(database=name),
                )
            except DBAPIError:
                connection.execute(text(f'CREATE SCHEMA "{name}"'))
                drop = f'DROP SCHEMA IF EXISTS "{name}" CASCADE'
                bench_url = make_url(url).update_query_dict({"options": f"-csearch_path={name}"})
        try:
            yield bench_url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(drop))
    finally:
        admin.dispose()


def seed(url: str, readers: int, studies: int) -> list[Study]:
    """Migrate, add the readers and ``studies`` studies, each with one result of three findings."""
    upgrade(url)
    engine = make_engine(url)
    made = []
    with transaction(session_factory(engine)) as db:
        for number in range(readers):
            add_user(db, reader_name(number), PASSWORD, {Role.RADIOLOGIST})
        model = ModelVersion(
            model_id="openaim.bench-cxr",
            version="1.0.0",
            name="Benchmark chest X-ray model",
            vendor="openaim bench",
            device_uid=generate_uid(),
            weights_sha256="0" * 64,
            manifest_json="{}",
            package_path="",
            mode=Mode.CLINICAL.value,
            installed_by="bench",
        )
        db.add(model)
        db.flush()
        for _ in range(studies):
            study_uid, series_uid, instance_uid = generate_uid(), generate_uid(), generate_uid()
            job = Job(study_uid=study_uid, series_uid=series_uid, model_version_id=model.id)
            job.state = JobState.DONE.value
            db.add(job)
            db.flush()
            result = InferenceResult(
                job_id=job.id,
                study_uid=study_uid,
                series_uid=series_uid,
                sop_instance_uid=instance_uid,
                model_version_id=model.id,
                triage="urgent",
                sr_uid=generate_uid(),
            )
            result.findings = [
                Finding(label=label, display_name=label, probability=0.9, threshold=0.5, positive=True)
                for label in LABELS
            ]
            db.add(result)
            db.flush()
            findings = tuple(f"finding-{finding.id}" for finding in result.findings)
            made.append(Study(study_uid, instance_uid, f"platform-{result.id}", findings))
    engine.dispose()
    return made


def reader_name(number: int) -> str:
    return f"reader{number:02d}"


@dataclass
class Stored:
    """What the database holds after the run, against what the readers were told."""

    rows: int = 0
    acknowledged_found: int = 0  # saves answered 201 whose row is there
    duplicate_client_ids: int = 0
    broken_histories: int = (
        0  # (reader, study, target) whose versions are not 1..n, each after the one before
    )
    unacknowledged_rows: int = 0  # rows whose save got no 201 (its answer was an error or lost)


def count_stored(url: str, created: set[str]) -> Stored:
    engine = make_engine(url)
    columns = (Feedback.id, Feedback.client_id, Feedback.user_id, Feedback.study_uid, Feedback.target)
    with engine.connect() as connection:
        rows = connection.execute(select(*columns, Feedback.version, Feedback.previous_id)).all()
    engine.dispose()
    client_ids = Counter(row.client_id for row in rows)
    histories: dict[tuple[int, str, str], list[Any]] = {}
    for row in rows:
        histories.setdefault((row.user_id, row.study_uid, row.target), []).append(row)
    broken = 0
    for history in histories.values():
        history.sort(key=lambda row: row.version)
        versions_ok = [row.version for row in history] == list(range(1, len(history) + 1))
        chain_ok = all(row.previous_id == before.id for before, row in itertools.pairwise(history))
        broken += not (versions_ok and chain_ok and history[0].previous_id is None)
    return Stored(
        rows=len(rows),
        acknowledged_found=len(created & client_ids.keys()),
        duplicate_client_ids=sum(1 for count in client_ids.values() if count > 1),
        broken_histories=broken,
        unacknowledged_rows=len(client_ids.keys() - created),
    )


# --- the app, in its own process ------------------------------------------------------------------------


def _serve(settings: dict[str, Any], orthanc: OrthancConnection, port: int, log: str) -> None:
    """The child process: the viewer under uvicorn, one worker; its stderr (tracebacks) goes to ``log``."""
    os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND), 2)
    app = create_app(Settings(**settings), orthanc)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, server_header=False)


@contextmanager
def running_app(data_dir: Path, database_url: str, orthanc: OrthancConnection) -> Iterator[App]:
    port = free_port()
    log = data_dir / "server.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = {"data_dir": data_dir, "database_url": database_url, "cookie_secure": False}
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(settings, orthanc, port, str(log)), name="viewer", daemon=True
    )
    process.start()
    app = App(f"http://127.0.0.1:{port}", process.pid or 0, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{app.url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if not process.is_alive() or time.monotonic() > deadline:
            told = log.read_text()[-2000:] if log.exists() else "(no log: see the output above)"
            raise RuntimeError(f"the viewer did not start:\n{told}")
        time.sleep(0.1)
    try:
        yield app
    finally:
        process.terminate()
        process.join(15)
        if process.is_alive():
            process.kill()
            process.join()


@dataclass(frozen=True)
class App:
    url: str
    pid: int
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def exceptions(self) -> Counter[str]:
        """The exception lines of the tracebacks the server logged (chained ones each count)."""
        pattern = re.compile(r"^[\w.]*(Error|Exception|Timeout)\b.*")
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return Counter(line[:160] for line in lines if pattern.match(line))


# --- the readers ----------------------------------------------------------------------------------------


@dataclass
class Save:
    action: str
    study: Study
    body: dict[str, Any]
    target: str


@dataclass
class Answer:
    action: str
    ms: float
    status: int | None  # None: no HTTP answer (transport error)
    problem: str = ""  # why it counts as an error or a wrong answer
    sent: float = 0.0  # time.perf_counter() when it was sent


@dataclass
class ReaderState:
    """One simulated reader: its session, what it has stored (to know each answer's right version), and
    its last stored save and last finding verdict (for retries and edits)."""

    client: httpx.AsyncClient
    rng: random.Random
    studies: list[Study]
    versions: dict[tuple[str, str], int] = field(default_factory=dict)
    stored_ids: dict[str, int] = field(default_factory=dict)  # client id -> row id, for saves answered 201
    last_stored: Save | None = None
    last_verdict: Save | None = None

    def next_save(self) -> Save:
        roll, edge = self.rng.random(), 0.0
        for action, share in SHARES.items():
            edge += share
            if roll < edge:
                save = self._make(action)
                if save is not None:
                    return save
                break
        return self._verdict(self.rng.choice(self.studies), None, "verdict")

    def _make(self, action: str) -> Save | None:
        """The save ``action`` names, or None where there is nothing yet to retry or edit."""
        if action == "retry":
            last = self.last_stored
            return Save("retry", last.study, last.body, last.target) if last else None
        if action == "edit":
            verdict = self.last_verdict
            return self._verdict(verdict.study, verdict.body["finding_id"], "edit") if verdict else None
        study = self.rng.choice(self.studies)
        return self._missed(study) if action == "missed" else self._triage(study)

    def _missed(self, study: Study) -> Save:
        x0, x1 = sorted(self.rng.uniform(0, 1000) for _ in range(2))
        y0, y1 = sorted(self.rng.uniform(0, 1000) for _ in range(2))
        missed_id = str(uuid.uuid4())
        body: dict[str, Any] = {
            "kind": "missed",
            "missed_id": missed_id,
            "mark": {"instance_uid": study.instance_uid, "frame": 1, "box": [x0, y0, x1, y1]},
            "comment": "nodule, right upper zone",
        }
        return Save("missed", study, self._stamped(body), f"missed:{missed_id}")

    def _triage(self, study: Study) -> Save:
        body: dict[str, Any] = {
            "kind": "study",
            "triage_correct": self.rng.random() < 0.8,
            "review_requested": self.rng.random() < 0.1,
        }
        return Save("study", study, self._stamped(body), "study")

    def _verdict(self, study: Study, finding_id: str | None, action: str) -> Save:
        finding_id = finding_id or self.rng.choice(study.finding_ids)
        body: dict[str, Any] = {"kind": "finding", "result_id": study.result_id, "finding_id": finding_id}
        verdict = self.rng.choice(("agree", "agree", "disagree", "unsure"))
        body["verdict"] = verdict
        if verdict == "disagree":
            body["reason"] = self.rng.choice(FALSE_POSITIVE_REASONS)
            body["comment"] = "skin fold over the apex"
        save = Save(action, study, self._stamped(body), f"finding:{finding_id}")
        self.last_verdict = save
        return save

    def _stamped(self, body: dict[str, Any]) -> dict[str, Any]:
        seconds = round(self.rng.uniform(5, 300), 1)
        return {"client_id": str(uuid.uuid4()), **body, "seconds_on_study": seconds}

    def judge(self, save: Save, status: int, answer: dict[str, Any]) -> str:
        """What is wrong with a 2xx answer, or "" when it is the right one, and remember what was stored."""
        key = (save.study.study_uid, save.target)
        client_id = save.body["client_id"]
        if save.action == "retry":
            if status != 200:
                return f"retry answered {status}: stored twice"
            if answer.get("id") != self.stored_ids[client_id]:
                return "retry answered another row"
            return ""
        if status != 201:
            return f"new save answered {status}"
        expected = self.versions.get(key, 0) + 1
        self.versions[key] = answer["version"]
        self.stored_ids[client_id] = answer["id"]
        self.last_stored = save
        return "" if answer["version"] == expected else f"version {answer['version']}, expected {expected}"


async def sign_in(client: httpx.AsyncClient, username: str) -> int:
    """As a browser: the sign-in form's token and cookie, the form, then any page for the session's token.

    Returns how many times that page still answered "not signed in" (a redirect to /signin) right after
    the sign-in's 303: the session row is committed only after the answer went out (see the notes).
    """
    pattern = re.compile(r'name="csrf_token" value="([^"]+)"')
    form = pattern.search((await client.get("/signin")).text)
    assert form is not None, "no CSRF token on the sign-in page"
    data = {"username": username, "password": PASSWORD, "csrf_token": form.group(1), "next": "/worklist"}
    signed_in = await client.post("/signin", data=data)
    assert signed_in.status_code == 303, f"sign-in of {username} failed: {signed_in.status_code}"
    for early in range(SIGN_IN_TRIES):
        answer = await client.get("/worklist", headers={"Accept": "text/html"})
        if page := pattern.search(answer.text):
            client.headers["X-CSRF-Token"] = page.group(1)
            return early
        assert answer.status_code == 303, f"no CSRF token on the worklist: {answer.status_code}"
        await asyncio.sleep(0.05)
    raise AssertionError(f"{username} still not signed in after {SIGN_IN_TRIES} tries")


async def read_and_save(
    reader: ReaderState, deadline: float, answers: list[Answer], created: set[str]
) -> None:
    """One reader's loop until ``deadline``: the save in flight at the deadline is finished, not cut off."""
    while time.perf_counter() < deadline:
        save = reader.next_save()
        start = time.perf_counter()
        try:
            response = await reader.client.post(
                f"/api/studies/{save.study.study_uid}/feedback", json=save.body
            )
        except httpx.HTTPError as error:
            answers.append(
                Answer(save.action, (time.perf_counter() - start) * 1000, None, type(error).__name__)
            )
            continue
        ms = (time.perf_counter() - start) * 1000
        if not response.is_success:
            detail = response.text[:100]
            answers.append(Answer(save.action, ms, response.status_code, f"{response.status_code} {detail}"))
            continue
        problem = reader.judge(save, response.status_code, response.json())
        if response.status_code == 201:
            created.add(save.body["client_id"])
        answers.append(Answer(save.action, ms, response.status_code, problem))


async def check_health(client: httpx.AsyncClient, deadline: float, answers: list[Answer]) -> None:
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        try:
            response = await client.get("/healthz")
        except httpx.HTTPError as error:
            answers.append(
                Answer("healthz", (time.perf_counter() - start) * 1000, None, type(error).__name__)
            )
            continue
        problem = "" if response.status_code == 200 else f"{response.status_code}"
        answers.append(Answer("healthz", (time.perf_counter() - start) * 1000, response.status_code, problem))


@dataclass
class Run:
    """One database's (or the peer's) run: the answers as the clients saw them, CPU spent on each side."""

    label: str
    readers: int
    seconds: float
    answers: list[Answer] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    server_exceptions: Counter[str] = field(default_factory=Counter)
    stored: Stored | None = None
    sign_in_races: int = 0  # readers whose first page after the sign-in's 303 was not yet signed in
    started: float = 0.0  # time.perf_counter() when the load began
    skipped: str = ""


async def load(app: App, run: Run, studies: list[Study] | None) -> None:
    """``run.readers`` clients, signed in (feedback) or not (the /healthz peer), for ``run.seconds``."""
    # Below uvicorn's 5 s keep-alive: a connection idle since sign-in is not reused just as the server
    # closes it (a ReadError a browser would retry by itself).
    limits = httpx.Limits(max_connections=1, keepalive_expiry=KEEPALIVE_S)
    clients = [
        httpx.AsyncClient(base_url=app.url, limits=limits, timeout=REQUEST_TIMEOUT_S)
        for _ in range(run.readers)
    ]
    try:
        if studies is not None:
            gate = asyncio.Semaphore(SIGN_IN_AT_ONCE)

            async def signed_in(number: int, client: httpx.AsyncClient) -> int:
                async with gate:
                    return await sign_in(client, reader_name(number))

            early = await asyncio.gather(*(signed_in(n, client) for n, client in enumerate(clients)))
            run.sign_in_races = sum(1 for count in early if count)
        cpu, server_cpu = time.process_time(), app.cpu_seconds()
        start = time.perf_counter()
        deadline = start + run.seconds
        if studies is None:
            await asyncio.gather(*(check_health(client, deadline, run.answers) for client in clients))
        else:
            readers = [ReaderState(client, random.Random(n), studies) for n, client in enumerate(clients)]
            await asyncio.gather(*(read_and_save(r, deadline, run.answers, run.created) for r in readers))
        run.started, run.seconds = start, time.perf_counter() - start
        run.client_cpu_s, run.server_cpu_s = time.process_time() - cpu, app.cpu_seconds() - server_cpu
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    run.server_exceptions = app.exceptions()


def measure(
    label: str, data_dir: Path, url: str, orthanc: OrthancConnection, args: argparse.Namespace
) -> Run:
    run = Run(label, args.readers, args.seconds)
    studies = seed(url, args.readers, args.studies)
    with running_app(data_dir, url, orthanc) as app:
        asyncio.run(load(app, run, studies))
    run.stored = count_stored(url, run.created)
    return run


def measure_peer(data_dir: Path, url: str, orthanc: OrthancConnection, args: argparse.Namespace) -> Run:
    run = Run("peer: GET /healthz", args.readers, args.seconds)
    with running_app(data_dir, url, orthanc) as app:
        asyncio.run(load(app, run, None))
    return run


def measure_postgres(
    data_dir: Path, url: str | None, orthanc: OrthancConnection, args: argparse.Namespace
) -> Run:
    if not url:
        return Run(
            "PostgreSQL",
            args.readers,
            args.seconds,
            skipped="skipped: no --postgres-url nor $OPENAIM_BENCH_POSTGRES_URL",
        )
    try:
        with fresh_postgres(url) as bench_url:
            return measure("PostgreSQL", data_dir, bench_url, orthanc, args)
    except DBAPIError as error:
        if error.connection_invalidated or "connect" in str(error).lower():
            first = str(error.orig or error).strip().splitlines()[0]
            return Run("PostgreSQL", args.readers, args.seconds, skipped=f"skipped: {first}")
        raise


# --- output ---------------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class Summary:
    label: str
    readers: int
    seconds: float
    requests: int
    created: int
    retried: int
    per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    wrong_answers: int
    lost_writes: int | None
    goal_met: bool | None
    client_cpu_share: float
    server_cpu_share: float


def summarise(run: Run) -> Summary:
    times = [answer.ms for answer in run.answers] or [0.0]
    ok = [answer for answer in run.answers if answer.status is not None and 200 <= answer.status < 300]
    errors = len(run.answers) - len(ok)
    wrong = sum(1 for answer in ok if answer.problem)
    lost = len(run.created) - run.stored.acknowledged_found if run.stored else None
    sound = run.stored is not None and not (run.stored.duplicate_client_ids or run.stored.broken_histories)
    return Summary(
        label=run.label,
        readers=run.readers,
        seconds=run.seconds,
        requests=len(run.answers),
        created=sum(1 for answer in ok if answer.status == 201),
        retried=sum(1 for answer in ok if answer.status == 200 and answer.action == "retry"),
        per_s=len(ok) / run.seconds if run.seconds else 0.0,
        p50_ms=percentile(times, 0.50),
        p99_ms=percentile(times, 0.99),
        max_ms=max(times),
        errors=errors,
        wrong_answers=wrong,
        lost_writes=lost,
        goal_met=(errors == 0 and wrong == 0 and lost == 0 and sound) if run.stored else None,
        client_cpu_share=run.client_cpu_s / run.seconds if run.seconds else 0.0,
        server_cpu_share=run.server_cpu_s / run.seconds if run.seconds else 0.0,
    )


def print_table(runs: list[Run], load_before: str) -> None:
    print(f"\nFeedback saves under load (loopback, one uvicorn worker; load average before: {load_before})\n")
    print(
        "| database           | readers | seconds | saves/s | p50 ms | p99 ms | max ms | errors "
        "| lost writes | goal met |"
    )
    print(
        "|--------------------|--------:|--------:|--------:|-------:|-------:|-------:|-------:|------------:|----------|"
    )
    for run in runs:
        if run.skipped:
            print(f"| {run.label:<18} | {run.readers:>7} | {'':>7} | {run.skipped} |")
            continue
        s = summarise(run)
        lost = "—" if s.lost_writes is None else str(s.lost_writes)
        goal = "—" if s.goal_met is None else ("yes" if s.goal_met else "NO")
        print(
            f"| {s.label:<18} | {s.readers:>7} | {s.seconds:>7.0f} | {s.per_s:>7.0f} | {s.p50_ms:>6.1f} "
            f"| {s.p99_ms:>6.0f} | {s.max_ms:>6.0f} | {s.errors:>6} | {lost:>11} | {goal:<8} |"
        )
    for run in runs:
        if not run.skipped:
            print_details(run)


def print_details(run: Run) -> None:
    s = summarise(run)
    print(f"\n{run.label}: {s.requests} requests", end="")
    if run.stored:
        print(f", {s.created} answered 201 (new row), {s.retried} deliberate retries answered 200", end="")
    print(f"; CPU: load client {s.client_cpu_share:.0%} of a core, app server {s.server_cpu_share:.0%}")
    by_action: dict[str, list[float]] = {}
    for answer in run.answers:
        by_action.setdefault(answer.action, []).append(answer.ms)
    for action, times in sorted(by_action.items()):
        print(
            f"  {action:<8} {len(times):>6} requests  p50 {percentile(times, 0.5):7.1f} ms"
            f"  p99 {percentile(times, 0.99):7.0f} ms  mean {statistics.fmean(times):7.1f} ms"
        )
    problems: dict[str, list[float]] = {}
    for answer in run.answers:
        if answer.problem:
            problems.setdefault(answer.problem, []).append(answer.sent - run.started)
    for problem, times in sorted(problems.items(), key=lambda item: -len(item[1]))[:8]:
        print(f"  {len(times):>6} x {problem} (sent {min(times):.1f} to {max(times):.1f} s into the run)")
    if run.stored:
        print(f"  sign-in: {run.sign_in_races} of {run.readers} readers not yet signed in on the next page")
        st = run.stored
        print(
            f"  database: {st.rows} rows; of the {len(run.created)} saves answered 201, "
            f"{st.acknowledged_found} found; "
            f"{st.duplicate_client_ids} client ids twice; {st.broken_histories} version histories with gaps; "
            f"{st.unacknowledged_rows} rows whose save was not answered 201"
        )
    for line, count in run.server_exceptions.most_common(6):
        print(f"  server log {count:>5} x {line}")


NOTES = """
Notes: each reader is one httpx.AsyncClient (its own cookie jar and connection) in one asyncio loop in this
process; the app is a separate process (uvicorn, one worker, the same create_app as `openaim serve`); both
share this machine's cores with the database server (PostgreSQL) and with anything else running, so the CPU
line under each row says how much of a core the load client and the app server took. The /healthz peer is
the floor of that setup: as many clients on a route that touches no database. The readers have no think
time (each sends its next save when the last is answered), so latency is mostly queueing: about readers /
saves per second. Latency is from sending the request to having the whole answer, as the client saw it
(client-side scheduling included). saves/s counts 2xx answers (new rows and retries). errors: non-2xx
answers and requests with no answer. lost writes: saves answered 201 whose row is not in the database.
Goal met: no errors, no wrong answers (a retry that is not answered 200 with its first row, a new version
that is not the next one), no lost writes, no client id twice and every version history 1..n in the
database. The sign-in line counts readers whose first page after the sign-in's 303 did not yet see the
session (retried every 50 ms): it must be 0 since viewer/access/deps.py commits before answering
(`Depends(get_db, scope="function")`); with FastAPI's default scope the commit came after the answer and
5-8 of 50 readers raced it.
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OPENAIM_BENCH_POSTGRES_URL"),
        help="a PostgreSQL server to create a scratch database on (default: $OPENAIM_BENCH_POSTGRES_URL)",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    load_before = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with OrthancServer(root / "orthanc", http_port=free_port(), stable_age=5) as orthanc:
            sqlite_url = f"sqlite:///{root / 'sqlite' / 'openaim.db'}"
            (root / "sqlite").mkdir()
            runs = [
                measure("SQLite", root / "sqlite", sqlite_url, orthanc, args),
                measure_postgres(root / "postgres", args.postgres_url, orthanc, args),
                measure_peer(root / "peer", sqlite_url, orthanc, args),
            ]
    print_table(runs, load_before)
    print(NOTES)
    if args.json:
        record = [
            {"label": run.label, "skipped": run.skipped}
            | ({} if run.skipped else asdict(summarise(run)))
            | ({"stored": asdict(run.stored), "sign_in_races": run.sign_in_races} if run.stored else {})
            for run in runs
        ]
        args.json.write_text(json.dumps({"runs": record, "load_average_before": load_before}, indent=2))


if __name__ == "__main__":
    main()
