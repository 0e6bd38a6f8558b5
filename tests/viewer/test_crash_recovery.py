"""kill -9 of the platform while readers save feedback and while a review meeting records its decisions.

The real `openaim serve` runs against the session's Orthanc and a SQLite file; it is killed with SIGKILL
in the middle of a stream of saves, started again, and the browser's outbox is played: every save that
got no answer is sent again (and, to be sure a resend is harmless, so is every save that did). Then no
feedback or decision is lost or doubled, each one has its audit row, and `openaim audit verify` passes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openaim import audit
from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.settings import Settings
from orthanc import OrthancConnection
from orthanc.launcher import free_port
from viewer.access.users import Role, add_user
from viewer.feedback.records import Feedback
from viewer.review.records import ReviewCase, ReviewDecision

from .ai_fixtures import Image2D, store_chest_image
from .conftest import PASSWORD, csrf_token
from .study_index_fixtures import index_studies

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
OPENAIM = Path(sys.executable).parent / "openaim"
OUTCOMES = ("ai_right", "reader_right", "both_wrong", "undecided")


@dataclass
class Platform:
    """`openaim serve` in a process of its own, which the test may kill."""

    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(OPENAIM), "serve", "--port", str(self.port)],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("the platform did not start: " + self.log.read_text()[-3000:])

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@pytest.fixture
def platform(tmp_path: Path, orthanc: OrthancConnection) -> Iterator[Platform]:
    env = os.environ | {
        "PYTHONPATH": str(REPO),  # this checkout's code, whichever checkout installed the command
        "OPENAIM_DATA_DIR": str(tmp_path / "data"),
        "OPENAIM_ORTHANC_URL": orthanc.url,
        "OPENAIM_ORTHANC_USERNAME": orthanc.username,
        "OPENAIM_ORTHANC_PASSWORD": orthanc.password,
        "OPENAIM_INFERENCE_ENABLED": "false",
        "OPENAIM_STUDY_INDEX_FOLLOW": "false",
        "OPENAIM_COOKIE_SECURE": "false",
    }
    settings = Settings(data_dir=tmp_path / "data")
    upgrade(settings.resolved_database_url)
    with transaction(session_factory(make_engine(settings.resolved_database_url))) as db:
        add_user(db, "dr-koh", PASSWORD, {Role.RADIOLOGIST, Role.REVIEWER})
    running = Platform(env, tmp_path / "platform.log")
    running.start()
    yield running
    running.stop()


def _database(platform: Platform) -> sessionmaker[Session]:
    settings = Settings(data_dir=Path(platform.env["OPENAIM_DATA_DIR"]))
    return session_factory(make_engine(settings.resolved_database_url), settings.resolved_audit_key)


def _signed_in(platform: Platform) -> httpx.Client:
    client = httpx.Client(base_url=platform.url, timeout=10)
    token = csrf_token(client.get("/signin").text)
    form = {"username": "dr-koh", "password": PASSWORD, "csrf_token": token, "next": "/worklist"}
    assert client.post("/signin", data=form).status_code in (200, 303)
    client.headers["X-CSRF-Token"] = csrf_token(client.get("/worklist", headers={"Accept": "text/html"}).text)
    return client


def _studies(orthanc: OrthancConnection, shared_data: Path, count: int) -> list[Image2D]:
    return [store_chest_image(orthanc, shared_data, "20260101", f"CRASH-{n}") for n in range(count)]


class Outbox:
    """What the browser keeps until the server answers: every save, and which ones got an answer."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, object]]] = []  # (path, body), in order
        self.answered: set[int] = set()

    def post(self, client: httpx.Client, path: str, body: dict[str, object], form: bool = False) -> None:
        self.sent.append((path, body))
        try:
            answer = client.post(path, data=body) if form else client.post(path, json=body)
        except httpx.TransportError:
            return  # killed before it answered: the outbox keeps it
        assert answer.status_code in (200, 201, 303), answer.text
        self.answered.add(len(self.sent) - 1)

    def replay(self, client: httpx.Client, form: bool = False) -> None:
        """Everything again, as a browser that cannot tell which saves the server kept."""
        for path, body in self.sent:
            answer = client.post(path, data=body) if form else client.post(path, json=body)
            assert answer.status_code in (200, 201, 303), answer.text


def _saving_until_killed(platform: Platform, save: threading.Thread, outbox: Outbox, answered: int) -> None:
    """Kill the platform once ``answered`` saves got their answer, while the saving goes on."""
    deadline = time.monotonic() + 60
    while len(outbox.answered) < answered:
        assert time.monotonic() < deadline, "the saves did not get going"
        time.sleep(0.01)
    platform.kill()
    save.join(60)


def _audit_events(db: Session, event_type: audit.EventType) -> list[dict[str, object]]:
    query = select(audit.AuditEvent).where(audit.AuditEvent.event_type == event_type.value)
    rows = db.scalars(query.order_by(audit.AuditEvent.id))
    return [json.loads(row.detail) for row in rows]


def _decisions(db: Session) -> list[tuple[int, tuple[str, str]]]:
    """(case number, (outcome, learning point)) of every decision."""
    query = select(ReviewCase.position, ReviewDecision.outcome, ReviewDecision.learning_point).join(
        ReviewCase, ReviewCase.id == ReviewDecision.case_id
    )
    return [(number, (outcome, point)) for number, outcome, point in db.execute(query)]


def _verify(platform: Platform) -> None:
    done = subprocess.run(
        [str(OPENAIM), "audit", "verify"], env=platform.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_feedback_saved_when_the_platform_is_killed_is_neither_lost_nor_doubled_and_is_audited(
    platform: Platform, orthanc: OrthancConnection, shared_data: Path
) -> None:
    studies = _studies(orthanc, shared_data, 3)
    outbox = Outbox()
    client = _signed_in(platform)

    def save() -> None:
        for number in range(400):
            study = studies[number % len(studies)]
            body = {"client_id": str(uuid.uuid4()), "kind": "study", "triage_correct": number % 2 == 0}
            outbox.post(client, f"/api/studies/{study.study_uid}/feedback", body)
            if platform.process is not None and platform.process.poll() is not None:
                return

    saving = threading.Thread(target=save)
    saving.start()
    _saving_until_killed(platform, saving, outbox, answered=15)
    assert len(outbox.answered) < len(outbox.sent), "the kill came after the last save: nothing was tested"
    platform.start()
    with _database(platform)() as db:  # what the kill left: every kept save with its audit row
        kept = {row.id: row.client_id for row in db.scalars(select(Feedback))}
        audited_then = [event["feedback"] for event in _audit_events(db, audit.EventType.AI_FEEDBACK)]
    assert sorted(audited_then) == sorted(kept)
    answered = {str(outbox.sent[index][1]["client_id"]) for index in outbox.answered}
    assert answered <= set(kept.values())  # an answered save was kept
    outbox.replay(_signed_in(platform))

    sent = {str(body["client_id"]) for _, body in outbox.sent}
    with _database(platform)() as db:
        rows = list(db.scalars(select(Feedback)))
        events = _audit_events(db, audit.EventType.AI_FEEDBACK)
    assert sorted(row.client_id for row in rows) == sorted(sent)  # each save once, none lost
    audited = [event["feedback"] for event in events]
    assert sorted(audited) == sorted(row.id for row in rows)  # each save's audit row, once
    _verify(platform)


def test_decisions_recorded_when_the_platform_is_killed_are_neither_lost_nor_doubled_and_are_audited(
    platform: Platform, orthanc: OrthancConnection, shared_data: Path
) -> None:
    studies = _studies(orthanc, shared_data, 3)
    index_studies(orthanc, _database(platform), *(study.study_uid for study in studies))  # the queue's
    client = _signed_in(platform)
    for study in studies:  # each study flagged for review: the queue the meeting is made from
        body = {"client_id": str(uuid.uuid4()), "kind": "study", "review_requested": True}
        assert client.post(f"/api/studies/{study.study_uid}/feedback", json=body).status_code == 201
    form = {"title": "Crash meeting", "case": [study.study_uid for study in studies]}
    started = client.post("/review/meetings", data=form)
    assert started.status_code == 303, started.text
    meeting = started.headers["location"].split("/")[3]
    outbox = Outbox()

    def decide() -> None:
        for number in range(300):
            case = number % len(studies) + 1
            body = {"outcome": OUTCOMES[number % len(OUTCOMES)], "learning_point": f"save {number}"}
            outbox.post(client, f"/review/meetings/{meeting}/cases/{case}/decision", body, form=True)
            if platform.process is not None and platform.process.poll() is not None:
                return

    deciding = threading.Thread(target=decide)
    deciding.start()
    _saving_until_killed(platform, deciding, outbox, answered=10)
    assert len(outbox.answered) < len(outbox.sent), "the kill came after the last decision: nothing tested"
    platform.start()
    with _database(platform)() as db:  # what the kill left: each case's decision is its newest audit row
        cases = {str(case): decision for case, decision in _decisions(db)}
        events = _audit_events(db, audit.EventType.AI_REVIEW_DECISION)
        newest = {str(event["case"]): event for event in events}
    assert cases.keys() == newest.keys()
    for case, (outcome, learning_point) in cases.items():
        assert (newest[case]["outcome"], newest[case]["learning_point"]) == (outcome, learning_point)
    outbox.replay(_signed_in(platform), form=True)

    last_sent = {path.split("/")[-2]: body for path, body in outbox.sent}  # case number -> its last save
    with _database(platform)() as db:
        decisions = list(db.scalars(select(ReviewDecision)))
        events = _audit_events(db, audit.EventType.AI_REVIEW_DECISION)
    assert len(decisions) == len(studies)  # one per case, none doubled
    by_case = {str(event["case"]): event for event in events}  # the newest event of each case wins
    for case, body in last_sent.items():
        assert by_case[case]["outcome"] == body["outcome"]
        assert by_case[case]["learning_point"] == body["learning_point"]
    assert sorted((d.outcome, d.learning_point) for d in decisions) == sorted(
        (str(body["outcome"]), str(body["learning_point"])) for body in last_sent.values()
    )
    # Every recorded save has its audit row: the replay alone wrote one per save it made.
    assert len(events) >= len(outbox.answered) + len(outbox.sent)
    _verify(platform)
