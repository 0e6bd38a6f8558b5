"""Second-reader feedback through the API: one save per click, every edit a new version with the
history kept, two readers apart, retries never doubled, the algorithm recorded by the server, and bad
input refused."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from inference.catalog import Mode
from inference.results import Finding
from openaim.audit import AuditEvent
from openaim.db import transaction
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import Image2D, add_result, install_model, store_chest_image
from tests.viewer.conftest import sign_in
from viewer.access.users import User
from viewer.feedback.records import Feedback


@pytest.fixture
def result(
    orthanc: OrthancConnection,
    shared_data: Path,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> tuple[Image2D, str, str]:
    """A study with one clinical result; returns (image, result id, its positive finding's id)."""
    image = store_chest_image(orthanc, shared_data, "20250501", patient_id="FEEDBACK")
    model = install_model(db, settings, tmp_path / "model", Mode.CLINICAL, number=3)
    result_id = add_result(db, image, model, "urgent", {"Effusion": 0.1, "Pneumothorax": 0.9})
    with db() as session:
        finding_id = session.scalar(
            select(Finding.id).where(Finding.result_id == result_id, Finding.positive)
        )
    return image, f"platform-{result_id}", f"finding-{finding_id}"


def _verdict(result: tuple[Image2D, str, str], verdict: str, **more: object) -> dict[str, object]:
    _, result_id, finding_id = result
    body = {
        "client_id": str(uuid.uuid4()),
        "kind": "finding",
        "result_id": result_id,
        "finding_id": finding_id,
    }
    return body | {"verdict": verdict} | more


def _post(client: TestClient, image: Image2D, body: dict[str, object]):
    return client.post(f"/api/studies/{image.study_uid}/feedback", json=body)


def _rows(db: sessionmaker[Session]) -> list[Feedback]:
    with db() as session:
        return list(session.scalars(select(Feedback).order_by(Feedback.id)))


def test_agree_is_one_save_with_the_algorithm_recorded_by_the_server(
    radiologist: TestClient, result: tuple[Image2D, str, str], db: sessionmaker[Session]
) -> None:
    image = result[0]
    response = _post(radiologist, image, _verdict(result, "agree", seconds_on_study=12.5))
    assert response.status_code == 201, response.text
    [row] = _rows(db)
    assert (row.verdict, row.version, row.finding_label) == ("agree", 1, "Pneumothorax")
    assert (row.model_id, row.model_version) == ("openaim.tiny-3", "1.0.0")
    assert row.device_uid == "1.2.826.0.1.3680043.10.1234.3.0"
    assert row.ai_visible is True and row.seconds_on_study == 12.5
    with db() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.event_type == "AIFeedback")).all()
    assert [(event.username, event.object_uid) for event in events] == [("radiologist", image.study_uid)]


def test_an_edit_is_a_new_version_and_the_history_stays(
    radiologist: TestClient, result: tuple[Image2D, str, str], db: sessionmaker[Session]
) -> None:
    image = result[0]
    assert _post(radiologist, image, _verdict(result, "agree")).status_code == 201
    changed = _verdict(result, "disagree", reason="false_positive_artefact", comment="skin fold")
    assert _post(radiologist, image, changed).status_code == 201
    first, second = _rows(db)
    assert (first.verdict, first.version) == ("agree", 1)
    assert (second.verdict, second.reason, second.version, second.previous_id) == (
        "disagree",
        "false_positive_artefact",
        2,
        first.id,
    )
    current = radiologist.get(f"/api/studies/{image.study_uid}/feedback").json()["feedback"]
    assert [(item["verdict"], item["version"]) for item in current] == [("disagree", 2)]


def test_a_retried_save_is_stored_once(
    radiologist: TestClient, result: tuple[Image2D, str, str], db: sessionmaker[Session]
) -> None:
    image = result[0]
    body = _verdict(result, "unsure")
    assert _post(radiologist, image, body).status_code == 201
    again = _post(radiologist, image, body)
    assert again.status_code == 200 and again.json()["version"] == 1
    assert len(_rows(db)) == 1


def test_two_readers_keep_their_own_feedback(
    client: TestClient, result: tuple[Image2D, str, str], db: sessionmaker[Session]
) -> None:
    image = result[0]
    sign_in(client, "radiologist")
    assert _post(client, image, _verdict(result, "agree")).status_code == 201
    client.cookies.clear()
    sign_in(client, "reviewer")
    assert _post(client, image, _verdict(result, "disagree", reason="wrong_location")).status_code == 201
    assert [
        item["verdict"] for item in client.get(f"/api/studies/{image.study_uid}/feedback").json()["feedback"]
    ] == ["disagree"]
    assert sorted((row.verdict, row.version) for row in _rows(db)) == [("agree", 1), ("disagree", 1)]


def test_missed_finding_and_study_feedback(
    radiologist: TestClient, result: tuple[Image2D, str, str], db: sessionmaker[Session]
) -> None:
    image = result[0]
    missed = {
        "client_id": str(uuid.uuid4()),
        "kind": "missed",
        "missed_id": str(uuid.uuid4()),
        "mark": {"instance_uid": image.instance_uid, "frame": 1, "box": [10, 12, 40, 44]},
        "comment": "nodule, right upper zone",
    }
    assert _post(radiologist, image, missed).status_code == 201
    study = {
        "client_id": str(uuid.uuid4()),
        "kind": "study",
        "triage_correct": False,
        "review_requested": True,
    }
    assert _post(radiologist, image, study).status_code == 201
    missed_row, study_row = _rows(db)
    assert missed_row.reason == "false_negative" and missed_row.mark == missed["mark"]
    assert (study_row.target, study_row.triage_correct, study_row.review_requested) == ("study", False, True)


@pytest.mark.parametrize(
    "change",
    [
        {"verdict": None},
        {"verdict": "agree", "reason": "false_positive_artefact"},
        {"verdict": "disagree", "reason": "false_negative"},
        {"verdict": "maybe"},
        {"comment": "x" * 2001},
        {"client_id": "not-a-uuid!"},
        {"result_id": "platform-999999"},
        {"result_id": "<script>"},
        {"kind": "missed"},
        {
            "mark": {"instance_uid": "1.2.abc", "box": [0, 0, 1, 1]},
            "reason": "wrong_location",
            "verdict": "disagree",
        },
    ],
)
def test_bad_feedback_is_refused_and_nothing_is_stored(
    radiologist: TestClient,
    result: tuple[Image2D, str, str],
    db: sessionmaker[Session],
    change: dict[str, object],
) -> None:
    body = {**_verdict(result, "agree"), **change}
    response = _post(radiologist, result[0], body)
    assert response.status_code in (404, 422), response.text
    assert _rows(db) == []


def test_governance_cannot_give_feedback(client: TestClient, result: tuple[Image2D, str, str]) -> None:
    sign_in(client, "governance")
    assert _post(client, result[0], _verdict(result, "agree")).status_code == 403


def test_a_finding_of_another_result_is_refused(
    radiologist: TestClient,
    result: tuple[Image2D, str, str],
    db: sessionmaker[Session],
    orthanc: OrthancConnection,
    shared_data: Path,
    settings: Settings,
    tmp_path: Path,
) -> None:
    other_image = store_chest_image(orthanc, shared_data, "20250502", patient_id="FEEDBACK-OTHER")
    other_model = install_model(db, settings, tmp_path / "other", Mode.CLINICAL, number=4)
    other_result = add_result(db, other_image, other_model, None, {"Effusion": 0.9})
    with db() as session:
        foreign_finding = session.scalar(select(Finding.id).where(Finding.result_id == other_result))
    body = _verdict(result, "agree", finding_id=f"finding-{foreign_finding}")
    assert _post(radiologist, result[0], body).status_code == 404
    assert _rows(db) == []


def test_a_blinded_reader_gives_feedback_only_after_an_impression(
    radiologist: TestClient, result: tuple[Image2D, str, str], db: sessionmaker[Session]
) -> None:
    with transaction(db) as session:
        session.execute(update(User).where(User.username == "radiologist").values(blinded_read=True))
    image = result[0]
    refused = _post(radiologist, image, _verdict(result, "agree"))
    assert refused.status_code == 403  # final: the browser's outbox does not retry it
    assert _rows(db) == []
    radiologist.post(f"/studies/{image.study_uid}/impression", data={"impression": "abnormal"})
    assert _post(radiologist, image, _verdict(result, "agree")).status_code == 201


def test_a_save_and_its_audit_event_commit_together(
    radiologist: TestClient,
    result: tuple[Image2D, str, str],
    db: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 15 item 7: the event was appended after the save's commit, and a kill -9 between the two
    left 8 saves without their event. Now a failure while appending the event fails the save with it;
    the event is then kept, marked with the request's failure."""
    hash_of = AuditEvent.content_hash
    failures = iter([RuntimeError("the audit trail failed once")])

    def fails_once(*args: object, **kwargs: object) -> str:
        if (failure := next(failures, None)) is not None:
            raise failure
        return hash_of(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AuditEvent, "content_hash", fails_once)
    with pytest.raises(RuntimeError, match="the audit trail failed once"):
        _post(radiologist, result[0], _verdict(result, "agree"))
    assert _rows(db) == []
    with db() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.event_type == "AIFeedback")).all()
    assert json.loads(event.detail)["request_failed"] == "RuntimeError"
