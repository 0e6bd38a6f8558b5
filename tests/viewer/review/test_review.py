"""Discrepancy review, end to end through the real app, database and Orthanc: the queue holds exactly the
cases where readers disagreed with the AI or asked for review, its filters narrow it, a meeting steps
through the cases anonymised and records the consensus, minutes come out as a real PDF and a CSV, readers
see their own feedback, and every action is audited."""

from __future__ import annotations

import csv
import io
import re
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pypdfium2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from inference.catalog import Mode, ModelVersion
from inference.results import Finding
from inference.study_index import IndexedStudy
from openaim.audit import AuditEvent
from openaim.settings import REPO_ROOT, Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import Image2D, add_result, install_model, store_chest_image
from tests.viewer.conftest import sign_in
from tests.viewer.study_index_fixtures import index_studies
from viewer.access.users import User
from viewer.feedback.records import Feedback
from viewer.review.records import ReviewDecision, ReviewMeeting

ARTIFACTS = REPO_ROOT / "test-artifacts" / "review"
# Planted on study "artefact"; none of them may reach a meeting page, its images' URLs or the minutes.
PATIENT_NAME = "ZQUILLON^XAVERIA"
PATIENT_ID = "PID-ZQX-4471"
ACCESSION = "ACC-QQ-9182"
STUDY_DATE = "19870314"
DESCRIPTION = "CHEST PA ERECT"
FILE_BIRTH_DATE = "20140422"  # the shared fixture's own PatientBirthDate
FILE_PATIENT_NAME = "AVeryGood"  # part of the shared fixture's own PatientName


@dataclass(frozen=True)
class Study:
    image: Image2D
    result_id: str  # "platform-<id>"
    positive_finding: str  # "finding-<id>" of Pneumothorax (positive)


@dataclass(frozen=True)
class Scenario:
    """Six studies: four in the queue (artefact, triage, missed, flagged), two not (agreed, changed)."""

    studies: dict[str, Study]

    def uid(self, name: str) -> str:
        return self.studies[name].image.study_uid


def _post(client: TestClient, study: Study, body: dict[str, object]) -> None:
    body = {"client_id": str(uuid.uuid4())} | body
    response = client.post(f"/api/studies/{study.image.study_uid}/feedback", json=body)
    assert response.status_code == 201, response.text


def _verdict(study: Study, verdict: str, **more: object) -> dict[str, object]:
    finding = {"kind": "finding", "result_id": study.result_id, "finding_id": study.positive_finding}
    return finding | {"verdict": verdict} | more


def _study(
    orthanc: OrthancConnection,
    shared_data: Path,
    db: sessionmaker[Session],
    model: ModelVersion,
    patient_id: str,
    **planted: str,
) -> Study:
    image = store_chest_image(
        orthanc, shared_data, planted.pop("study_date", "20250601"), patient_id, **planted
    )
    result_id = add_result(db, image, model, "urgent", {"Effusion": 0.1, "Pneumothorax": 0.9})
    with db() as session:
        finding_id = session.scalar(
            select(Finding.id).where(Finding.result_id == result_id, Finding.positive)
        )
    index_studies(orthanc, db, image.study_uid)  # as the follower does: the queue lists indexed studies
    return Study(image, f"platform-{result_id}", f"finding-{finding_id}")


@pytest.fixture
def scenario(
    client: TestClient,
    orthanc: OrthancConnection,
    shared_data: Path,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> Scenario:
    model = install_model(db, settings, tmp_path / "model-3", Mode.CLINICAL, number=3)
    other = install_model(db, settings, tmp_path / "model-4", Mode.CLINICAL, number=4)
    studies = {
        "artefact": _study(
            orthanc,
            shared_data,
            db,
            model,
            PATIENT_ID,
            accession=ACCESSION,
            patient_name=PATIENT_NAME,
            study_date=STUDY_DATE,
            description=DESCRIPTION,
        ),
        "triage": _study(orthanc, shared_data, db, model, "REVIEW-TRIAGE"),
        "missed": _study(orthanc, shared_data, db, other, "REVIEW-MISSED"),
        "flagged": _study(orthanc, shared_data, db, model, "REVIEW-FLAGGED"),
        "agreed": _study(orthanc, shared_data, db, model, "REVIEW-AGREED"),
        "changed": _study(orthanc, shared_data, db, model, "REVIEW-CHANGED"),
    }
    sign_in(client, "radiologist")
    comment = "Skin fold. Zquillon had the same last year, PID-ZQX-4471."
    _post(
        client,
        studies["artefact"],
        _verdict(studies["artefact"], "disagree", reason="false_positive_artefact", comment=comment),
    )
    _post(client, studies["triage"], _verdict(studies["triage"], "agree"))
    _post(client, studies["triage"], {"kind": "study", "triage_correct": False})
    _post(client, studies["flagged"], {"kind": "study", "triage_correct": True, "review_requested": True})
    _post(client, studies["agreed"], _verdict(studies["agreed"], "agree"))
    changed = _verdict(studies["changed"], "disagree", reason="wrong_location")
    _post(client, studies["changed"], changed | {"client_id": str(uuid.uuid4())})
    _post(client, studies["changed"], _verdict(studies["changed"], "agree"))  # a new version: agrees now
    client.cookies.clear()
    sign_in(client, "admin")
    missed = studies["missed"]
    mark = {"instance_uid": missed.image.instance_uid, "frame": 1, "box": [10, 12, 40, 44]}
    _post(
        client,
        missed,
        {"kind": "missed", "missed_id": str(uuid.uuid4()), "mark": mark, "result_id": missed.result_id},
    )
    client.cookies.clear()
    return Scenario(studies)


def _queue_uids(client: TestClient, query: str = "") -> list[str]:
    response = client.get(f"/review{query}", headers={"Accept": "text/html"})
    assert response.status_code == 200, response.text
    return list(dict.fromkeys(re.findall(r'<tr data-study-uid="([0-9.]+)"', response.text)))


def test_the_queue_holds_exactly_the_disagreements_and_flags(client: TestClient, scenario: Scenario) -> None:
    sign_in(client, "reviewer")
    expected = {scenario.uid(name) for name in ("artefact", "triage", "missed", "flagged")}
    assert set(_queue_uids(client)) == expected
    page = client.get("/review").text  # reader names are for reviewers to see here (not in meetings)
    assert "radiologist" in page and "false positive artefact" in page and "triage wrong" in page


def test_feedback_saved_for_a_study_not_in_the_archive_stays_out_of_the_queue(
    client: TestClient, scenario: Scenario, db: sessionmaker[Session]
) -> None:
    """As the feedback API saved them before it checked the archive (issue 15): the row is kept, unlisted."""
    ghost = "1.2.826.0.1.3680043.10.999.404"
    with db.begin() as session:
        session.execute(
            update(Feedback).where(Feedback.study_uid == scenario.uid("flagged")).values(study_uid=ghost)
        )
    sign_in(client, "reviewer")
    assert set(_queue_uids(client)) == {scenario.uid(name) for name in ("artefact", "triage", "missed")}


def test_queue_filters(client: TestClient, scenario: Scenario, db: sessionmaker[Session]) -> None:
    with db.begin() as session:  # the artefact disagreement was given in January
        session.execute(
            update(Feedback)
            .where(Feedback.study_uid == scenario.uid("artefact"))
            .values(created_at=datetime(2025, 1, 10, 9, 0, tzinfo=UTC))
        )
    sign_in(client, "reviewer")
    assert _queue_uids(client, "?model=openaim.tiny-4") == [scenario.uid("missed")]
    assert _queue_uids(client, "?model=openaim.tiny-3") == [scenario.uid("artefact")]
    assert _queue_uids(client, "?finding=Pneumothorax") == [scenario.uid("artefact")]
    assert _queue_uids(client, "?reason=false_negative") == [scenario.uid("missed")]
    assert _queue_uids(client, "?reason=triage_wrong") == [scenario.uid("triage")]
    assert _queue_uids(client, "?reason=review_requested") == [scenario.uid("flagged")]
    assert _queue_uids(client, "?date_from=2025-01-01&date_to=2025-01-31") == [scenario.uid("artefact")]
    later = set(_queue_uids(client, "?date_from=2025-02-01&date_to="))
    assert later == {scenario.uid(name) for name in ("triage", "missed", "flagged")}
    assert client.get("/review?reason=nonsense").status_code == 422


def test_roles(client: TestClient, scenario: Scenario) -> None:
    for username, status in (("radiologist", 403), ("governance", 403), ("reviewer", 200), ("admin", 200)):
        client.cookies.clear()
        sign_in(client, username)
        assert client.get("/review").status_code == status, username
    client.cookies.clear()
    sign_in(client, "radiologist")
    assert (
        client.post("/review/meetings", data={"title": "x", "case": scenario.uid("triage")}).status_code
        == 403
    )


def _start_meeting(client: TestClient, db: sessionmaker[Session], cases: list[str]) -> int:
    with db() as session:
        ids = {user.username: user.id for user in session.scalars(select(User))}
    form = {
        "title": "November discrepancy meeting",
        "case": cases,
        "attendee": [str(ids["admin"]), str(ids["radiologist"])],
        "guests": "Dr Visiting Surgeon\n\n",
    }
    response = client.post("/review/meetings", data=form, follow_redirects=False)
    assert response.status_code == 303, response.text
    found = re.fullmatch(r"/review/meetings/(\d+)/cases/1", response.headers["location"])
    assert found, response.headers["location"]
    return int(found.group(1))


def _decide(client: TestClient, meeting: int, number: int, **form: str) -> int:
    url = f"/review/meetings/{meeting}/cases/{number}/decision"
    return client.post(url, data=form, follow_redirects=False).status_code


def _audit(db: sessionmaker[Session], event_type: str) -> list[AuditEvent]:
    with db() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.event_type == event_type)))


def test_a_meeting_steps_through_its_cases_and_records_the_consensus(
    client: TestClient, scenario: Scenario, db: sessionmaker[Session]
) -> None:
    sign_in(client, "reviewer")
    meeting = _start_meeting(client, db, [scenario.uid("flagged"), scenario.uid("artefact")])
    base = f"/review/meetings/{meeting}"
    first = client.get(f"{base}/cases/1").text
    assert 'data-next="' + f'{base}/cases/2"' in first and "data-prev" not in first
    second = client.get(f"{base}/cases/2").text
    assert f'data-prev="{base}/cases/1"' in second and f'data-next="{base}"' in second
    assert client.get(f"{base}/cases/3").status_code == 404

    learning = "Skin folds mimic a pneumothorax; Zquillon case"
    assert (
        _decide(
            client, meeting, 2, outcome="reader_right", learning_point=learning, follow_up="Send to vendor"
        )
        == 303
    )
    assert _decide(client, meeting, 1, outcome="undecided") == 303
    assert (
        _decide(client, meeting, 1, outcome="ai_right", follow_up="Audit triage") == 303
    )  # replaces the first
    assert _decide(client, meeting, 1, outcome="nonsense") == 422

    with db() as session:
        stored = session.get(ReviewMeeting, meeting)
        assert stored is not None
        assert stored.chair.username == "reviewer"
        assert [attendee.name for attendee in stored.attendees] == [
            "reviewer",  # the chair first, though the form did not tick them
            "admin",
            "radiologist",
            "Dr Visiting Surgeon",
        ]
        assert [case.study_uid for case in stored.cases] == [
            scenario.uid("flagged"),
            scenario.uid("artefact"),
        ]
        decisions = {case.position: case.decision for case in stored.cases}
        assert decisions[1] is not None and decisions[2] is not None
        assert (decisions[1].outcome, decisions[1].follow_up) == ("ai_right", "Audit triage")
        assert decisions[2].outcome == "reader_right"
        assert decisions[2].learning_point == "Skin folds mimic a pneumothorax; [removed] case"
        assert decisions[2].follow_up == "Send to vendor" and decisions[2].decided_by.username == "reviewer"
        assert session.scalar(select(ReviewDecision.id).where(ReviewDecision.outcome == "undecided")) is None

    # The queue shows the decision; the open filter leaves the decided cases out.
    assert "Reader right" in client.get("/review").text
    open_cases = set(_queue_uids(client, "?state=open"))
    assert open_cases == {scenario.uid("triage"), scenario.uid("missed")}

    assert client.post(f"{base}/end", follow_redirects=False).status_code == 303
    assert _decide(client, meeting, 2, outcome="both_wrong") == 409
    assert client.post(f"{base}/end").status_code == 409
    summary = client.get(base).text
    assert "ended" in summary and "Dr Visiting Surgeon" in summary and "Audit triage" in summary

    decisions_audited = _audit(db, "AIReviewDecision")
    assert [(event.object_uid, event.action) for event in decisions_audited] == [
        (scenario.uid("artefact"), "C"),
        (scenario.uid("flagged"), "C"),
        (scenario.uid("flagged"), "U"),
    ]
    assert all(event.username == "reviewer" for event in decisions_audited)
    activity = [event.detail for event in _audit(db, "ApplicationActivity")]
    assert any('"event": "start"' in detail for detail in activity)
    assert any('"event": "end"' in detail for detail in activity)
    accessed = [event for event in _audit(db, "DICOMInstancesAccessed") if "review_meeting" in event.detail]
    assert {event.object_uid for event in accessed} == {scenario.uid("flagged"), scenario.uid("artefact")}


def _identifiers(scenario: Scenario) -> list[str]:
    image = scenario.studies["artefact"].image
    return [
        "ZQUILLON",
        "Zquillon",
        "XAVERIA",
        PATIENT_ID,
        ACCESSION,
        STUDY_DATE,
        "1987-03-14",
        FILE_BIRTH_DATE,
        "2014-04-22",
        FILE_PATIENT_NAME,
        image.study_uid,
        image.series_uid,
        image.instance_uid,
    ]


def test_the_meeting_page_is_anonymised(
    client: TestClient, scenario: Scenario, db: sessionmaker[Session]
) -> None:
    sign_in(client, "reviewer")
    meeting = _start_meeting(client, db, [scenario.uid("artefact")])
    _decide(client, meeting, 1, outcome="reader_right", learning_point="XAVERIA again", follow_up="none")
    html = client.get(f"/review/meetings/{meeting}/cases/1", headers={"Accept": "text/html"}).text
    summary = client.get(f"/review/meetings/{meeting}").text
    for page in (html, summary):
        for identifier in _identifiers(scenario):
            assert identifier.lower() not in page.lower(), identifier
    # What the meeting needs is there: the AI's findings with probabilities and its box, the reader's view.
    assert "Pneumothorax" in html and "0.90" in html and 'class="ai-box"' in html
    assert "Reader 1" in html and "false positive artefact" in html
    assert "had the same last year, [removed]." in html  # the reader's comment, cleaned
    assert "radiologist" not in html  # readers are numbered, not named
    # Everything the page loads: the image (pixels only) and the heatmap, none naming the patient.
    sources = re.findall(r'(?:href|src)="(/[^"]+)"', html)
    images = [source for source in sources if "/images/" in source or "heatmap" in source]
    assert any(source.endswith("/cases/1/images/1") for source in images)
    for source in images:
        response = client.get(source)
        assert response.status_code == 200, source
        assert response.headers["content-type"] == "image/png"
        for identifier in _identifiers(scenario):
            assert identifier.encode() not in response.content, (source, identifier)
    assert client.get(f"/review/meetings/{meeting}/cases/1/images/9").status_code == 404
    picture = client.get(f"/review/meetings/{meeting}/cases/1/images/1").content
    assert picture.startswith(b"\x89PNG") and len(picture) > 2000


def test_minutes_as_pdf_and_csv(client: TestClient, scenario: Scenario, db: sessionmaker[Session]) -> None:
    sign_in(client, "reviewer")
    meeting = _start_meeting(client, db, [scenario.uid("artefact"), scenario.uid("missed")])
    learning = "Skin folds mimic a pneumothorax"
    assert (
        _decide(
            client, meeting, 1, outcome="reader_right", learning_point=learning, follow_up="=HYPERLINK(x)"
        )
        == 303
    )
    base = f"/review/meetings/{meeting}"

    response = client.get(f"{base}/minutes.pdf")
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    document = pypdfium2.PdfDocument(response.content)
    page = document[0]
    text = page.get_textpage().get_text_range()
    assert "November discrepancy meeting" in text and "Reader right" in text and learning in text
    assert "not decided" in text and "openaim.tiny-3 1.0.0" in text and "false negative" in text
    assert "Dr Visiting Surgeon" in text and "reviewer" in text
    for identifier in _identifiers(scenario):
        assert identifier.lower() not in text.lower(), identifier
    bitmap = page.render(scale=1.5).to_pil().convert("L")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    bitmap.save(ARTIFACTS / "minutes-page-1.png")
    histogram = bitmap.histogram()
    dark = sum(histogram[:128]) / (bitmap.width * bitmap.height)
    assert 0.005 < dark < 0.5, f"page 1 looks blank or black: {dark:.4f} dark"
    document.close()

    response = client.get(f"{base}/minutes.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(row["case"], row["outcome"]) for row in rows] == [("1", "Reader right"), ("2", "not decided")]
    assert rows[0]["learning_point"] == learning and rows[0]["follow_up"] == "'=HYPERLINK(x)"
    assert rows[0]["finding"] == "Pneumothorax" and rows[0]["model"] == "openaim.tiny-3 1.0.0"
    assert rows[1]["discrepancy"] == "false negative" and rows[1]["decided_by"] == ""
    assert rows[0]["decided_by"] == "reviewer"
    for identifier in _identifiers(scenario):
        assert identifier.lower() not in response.text.lower(), identifier

    exports = _audit(db, "Export")
    assert sorted('"format": "pdf"' in event.detail for event in exports) == [False, True]
    assert all(event.username == "reviewer" for event in exports)
    client.cookies.clear()
    sign_in(client, "radiologist")
    assert client.get(f"{base}/minutes.csv").status_code == 403


def _history_ids(client: TestClient, query: str = "") -> list[int]:
    response = client.get(f"/my/feedback{query}")
    assert response.status_code == 200, response.text
    return [int(value) for value in re.findall(r'data-feedback-id="(\d+)"', response.text)]


def test_readers_see_their_own_feedback_and_admins_everyone(
    client: TestClient, scenario: Scenario, db: sessionmaker[Session]
) -> None:
    with db() as session:
        owner = {row.id: row.user_id for row in session.scalars(select(Feedback))}
        ids = {user.username: user.id for user in session.scalars(select(User))}
    mine = sorted((row for row, user in owner.items() if user == ids["radiologist"]), reverse=True)
    sign_in(client, "radiologist")
    assert _history_ids(client) == mine  # every version, newest first
    assert len(mine) == 7
    assert client.get("/my/feedback?user=admin").status_code == 403
    client.cookies.clear()
    sign_in(client, "admin")
    assert _history_ids(client) == sorted(owner, reverse=True)
    assert _history_ids(client, "?user=radiologist") == mine
    assert client.get("/my/feedback?user=nobody").status_code == 404
    queries = [event.detail for event in _audit(db, "Query") if "feedback history" in event.detail]
    assert len(queries) == 3


def test_a_meeting_becomes_a_de_identified_teaching_pack(
    client: TestClient, scenario: Scenario, db: sessionmaker[Session]
) -> None:
    sign_in(client, "reviewer")
    meeting = _start_meeting(client, db, [scenario.uid("artefact"), scenario.uid("missed")])
    response = client.post(f"/review/meetings/{meeting}/case-pack")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as pack:
        dicom_files = [name for name in pack.namelist() if name.endswith(".dcm")]
        assert len(dicom_files) == 2  # one image per case here
        for name in pack.namelist():
            text = pack.read(name).decode("latin-1").lower()
            for identifier in _identifiers(scenario):
                assert identifier.lower() not in text, (name, identifier)
        for name in dicom_files:
            assert pydicom.dcmread(io.BytesIO(pack.read(name))).PatientIdentityRemoved == "YES"
    assert len(_audit(db, "Export")) == 2  # one per study
    client.cookies.clear()
    sign_in(client, "radiologist")
    assert client.post(f"/review/meetings/{meeting}/case-pack").status_code == 403


def test_reviewers_know_a_study_by_its_accession_date_and_description(
    client: TestClient, scenario: Scenario, orthanc: OrthancConnection, db: sessionmaker[Session]
) -> None:
    artefact = scenario.uid("artefact")
    index_studies(orthanc, db, artefact)  # as the follower does when the study arrives
    unindexed = scenario.uid("missed")  # one that left the archive, say: the follower dropped its row
    with db.begin() as session:
        session.execute(delete(IndexedStudy).where(IndexedStudy.study_uid == unindexed))
    sign_in(client, "reviewer")
    queue = client.get("/review").text
    client.cookies.clear()
    sign_in(client, "admin")
    history = client.get("/my/feedback").text
    for page in (queue, history):
        label = page.split(f'<a href="/studies/{artefact}" title="{artefact}"')[1].split("</a>")[0]
        assert ACCESSION in label and "1987-03-14" in label and DESCRIPTION in label
        assert artefact not in label  # the UID is the link's title, not its text
    # A study the index does not hold leaves the queue; the reader's own history shows it by its UID.
    assert unindexed not in queue
    assert f'<span class="uid">{unindexed}</span>' in history
