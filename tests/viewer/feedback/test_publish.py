"""A reader's feedback published to the real Orthanc as a DICOM SR and read back from it: the SR names the
AI result SR it judges, says accept / reject per finding, keeps the box of a missed finding, names the
reader, passes dciodvfy and dsrdump, and is one instance per state of the feedback."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference import catalog
from inference.catalog import Mode
from inference.dicom_results import Algorithm, FindingResult, build_sr
from inference.jobs import Job, JobState
from inference.results import Finding, InferenceResult
from openaim.audit import AuditEvent
from openaim.db import transaction
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.inference.dicom_results.conftest import dciodvfy_errors, dsrdump
from tests.viewer.ai_fixtures import Image2D, add_result, install_model, store_chest_image
from tests.viewer.conftest import sign_in
from viewer.feedback.records import Reason
from viewer.feedback.sr import ASSESSMENT, MISSED_FINDING, REASON, REASONS, TRIAGE_CORRECT, person_name

ACCEPTED = hd.sr.CodedConcept("accept", "99OPENAIM", "Accepted")
REJECTED = hd.sr.CodedConcept("reject", "99OPENAIM", "Rejected")
MISSED_BOX = [10.0, 12.5, 40.0, 44.25]


@dataclass(frozen=True)
class Study:
    image: Image2D
    result_id: str
    findings: dict[str, str]  # label -> the panel's finding id
    ai_sr_uid: str


def _orthanc_file(orthanc: OrthancConnection, sop_uid: str) -> Dataset:
    with orthanc.client() as client:
        found = client.post("/tools/lookup", content=sop_uid).json()
        (orthanc_id,) = [item["ID"] for item in found if item["Type"] == "Instance"]
        return pydicom.dcmread(io.BytesIO(client.get(f"/instances/{orthanc_id}/file").content))


def _store(orthanc: OrthancConnection, dataset: Dataset) -> None:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with orthanc.client() as client:
        client.post("/instances", content=buffer.getvalue()).raise_for_status()


def _store_ai_sr(orthanc: OrthancConnection, db: sessionmaker[Session], image: Image2D, result: int) -> str:
    """The result's TID 1500 SR as the inference service writes it, under the result's ``sr_uid``."""
    source = _orthanc_file(orthanc, image.instance_uid)
    with db() as session:
        row = session.get(InferenceResult, result)
        assert row is not None
        version = session.get(catalog.ModelVersion, row.model_version_id)
        assert version is not None
        findings = [
            FindingResult(
                label=finding.label,
                display_name=finding.display_name,
                code=None,
                probability=finding.probability,
                threshold=finding.threshold,
                positive=finding.positive,
                boxes=[tuple(box) for box in json.loads(finding.boxes_json)],
                heatmap=None,
            )
            for finding in row.findings
        ]
        algorithm = Algorithm.of(catalog.manifest_of(version))
        sr_uid = row.sr_uid
    sr = build_sr(
        source, findings, "urgent", algorithm, sop_instance_uid=sr_uid, series_instance_uid=generate_uid()
    )
    _store(orthanc, sr)
    return sr_uid


@pytest.fixture
def study(
    orthanc: OrthancConnection,
    shared_data: Path,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> Study:
    image = store_chest_image(orthanc, shared_data, "20250601", patient_id="FEEDBACKSR")
    model = install_model(db, settings, tmp_path / "model", Mode.CLINICAL, number=4)
    result = add_result(db, image, model, "urgent", {"Effusion": 0.8, "Pneumothorax": 0.9})
    with db() as session:
        rows = session.execute(select(Finding.label, Finding.id).where(Finding.result_id == result)).all()
    findings = {label: f"finding-{finding_id}" for label, finding_id in rows}
    return Study(image, f"platform-{result}", findings, _store_ai_sr(orthanc, db, image, result))


def _post(client: TestClient, study: Study, body: Mapping[str, object]) -> None:
    response = client.post(
        f"/api/studies/{study.image.study_uid}/feedback", json={"client_id": str(uuid.uuid4()), **body}
    )
    assert response.status_code == 201, response.text


def _verdict(client: TestClient, study: Study, label: str, verdict: str, **more: object) -> None:
    finding = {"kind": "finding", "result_id": study.result_id, "finding_id": study.findings[label]}
    _post(client, study, finding | {"verdict": verdict} | more)


def _give_feedback(client: TestClient, study: Study) -> None:
    _verdict(client, study, "Pneumothorax", "agree")
    _verdict(client, study, "Effusion", "disagree", reason="false_positive_artefact", comment="skin fold")
    missed = {"instance_uid": study.image.instance_uid, "frame": 1, "box": MISSED_BOX}
    _post(
        client, study, {"kind": "missed", "missed_id": str(uuid.uuid4()), "mark": missed, "comment": "nodule"}
    )
    _post(client, study, {"kind": "study", "triage_correct": False, "review_requested": True})
    answer = client.post(f"/studies/{study.image.study_uid}/impression", data={"impression": "abnormal"})
    assert answer.status_code == 200, answer.text


def _publish(client: TestClient, study: Study) -> dict[str, object]:
    response = client.post(f"/api/studies/{study.image.study_uid}/feedback/sr")
    assert response.status_code == 200, response.text
    published: dict[str, object] = response.json()
    return published


def _sr_instances(orthanc: OrthancConnection, study: Study, series_uid: str) -> list[str]:
    with orthanc.client() as client:
        found = client.get(
            f"/dicom-web/studies/{study.image.study_uid}/series/{series_uid}/instances",
            headers={"Accept": "application/dicom+json"},
        )
    if found.status_code == 204:
        return []
    return sorted(item["00080018"]["Value"][0] for item in found.json())


def _retrieve(orthanc: OrthancConnection, study: Study, published: dict[str, object]) -> Dataset:
    """The SR back through WADO-RS, as any DICOMweb client would get it."""
    url = (
        f"/dicom-web/studies/{study.image.study_uid}/series/{published['series_uid']}"
        f"/instances/{published['sop_instance_uid']}"
    )
    with orthanc.client() as client:
        response = client.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 200
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    part = response.content.split(b"--" + boundary.encode())[1]
    return pydicom.dcmread(io.BytesIO(part.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n")))


def _read(path: Path) -> hd.sr.MeasurementReport:
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    return report


def _groups(report: hd.sr.MeasurementReport) -> dict[str, hd.sr.MeasurementsAndQualitativeEvaluations]:
    return {str(group.tracking_identifier): group for group in report.get_image_measurement_groups()}


def _evaluation(
    group: hd.sr.MeasurementsAndQualitativeEvaluations, name: hd.sr.CodedConcept | Code
) -> object:
    (evaluation,) = group.get_qualitative_evaluations(name=name)
    return evaluation.value


def _items(group: hd.sr.MeasurementsAndQualitativeEvaluations, name: Code) -> list[Dataset]:
    code = hd.sr.CodedConcept.from_code(name)
    return [item for item in group[0].ContentSequence if item.name == code]


def test_published_sr_reads_back_from_orthanc_with_each_verdict(
    radiologist: TestClient,
    study: Study,
    orthanc: OrthancConnection,
    db: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    _give_feedback(radiologist, study)
    published = _publish(radiologist, study)
    assert (published["findings"], published["missed"], published["already_stored"]) == (2, 1, False)

    dataset = _retrieve(orthanc, study, published)
    path = tmp_path / "feedback.dcm"
    dataset.save_as(path, enforce_file_format=True)
    sr = pydicom.dcmread(path)
    assert (sr.StudyInstanceUID, sr.PatientID) == (study.image.study_uid, "FEEDBACKSR")
    assert sr.SeriesDescription == "AI feedback" and sr.SOPInstanceUID == published["sop_instance_uid"]
    evidence = [
        item.ReferencedSOPInstanceUID
        for study_item in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study_item.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]
    assert study.ai_sr_uid in evidence and study.image.instance_uid in evidence

    report = _read(path)
    groups = _groups(report)
    assert _evaluation(groups["Pneumothorax"], ASSESSMENT) == ACCEPTED
    assert _evaluation(groups["Effusion"], ASSESSMENT) == REJECTED
    assert _evaluation(groups["Effusion"], REASON) == hd.sr.CodedConcept("fp-artefact", "99OPENAIM", "x")
    assert groups["Pneumothorax"].get_qualitative_evaluations(name=REASON) == []
    [comment] = _items(groups["Effusion"], codes.DCM.Comment)
    assert comment.TextValue == "skin fold"
    for label in ("Pneumothorax", "Effusion"):
        [source] = _items(groups[label], codes.DCM.SourceDocument)
        assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == study.ai_sr_uid
        [device] = _items(groups[label], codes.DCM.DeviceObserverUID)
        assert device.UID == "1.2.826.0.1.3680043.10.1234.4.0"
        [name] = _items(groups[label], codes.DCM.AlgorithmName)
        [version] = _items(groups[label], codes.DCM.AlgorithmVersion)
        assert (name.TextValue, version.TextValue) == ("Tiny chest X-ray classifier", "1.0.0")

    assert _evaluation(groups["study"], TRIAGE_CORRECT) == hd.sr.CodedConcept.from_code(codes.SCT.No)
    assert _evaluation(groups["study"], codes.DCM.Impression) == hd.sr.CodedConcept.from_code(
        codes.SCT.Abnormal
    )

    (missed,) = report.get_planar_roi_measurement_groups(finding_type=MISSED_FINDING)
    assert missed.roi is not None and missed.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    x0, y0, x1, y1 = MISSED_BOX
    np.testing.assert_allclose(missed.roi.value, [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
    (selected_from,) = missed.roi.ContentSequence
    assert selected_from.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == study.image.instance_uid

    (reader,) = report.get_observer_contexts(observer_type=codes.DCM.Person)
    assert str(reader.observer_identifying_attributes.name) == person_name("radiologist")

    dumped = dsrdump(path)
    assert dumped.returncode == 0, dumped.stderr
    assert "Reader assessment of AI finding" in dumped.stdout
    assert [line for line in (dumped.stdout + dumped.stderr).splitlines() if "error" in line.lower()] == []
    assert dciodvfy_errors(path) == []
    with db() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "DICOMInstancesTransferred")
        )
        assert [event.object_uid for event in events] == [study.image.study_uid]


def test_the_tracking_uid_is_the_ai_srs_own(
    radiologist: TestClient, study: Study, orthanc: OrthancConnection, tmp_path: Path
) -> None:
    _verdict(radiologist, study, "Pneumothorax", "agree")
    published = _publish(radiologist, study)
    path = tmp_path / "feedback.dcm"
    _retrieve(orthanc, study, published).save_as(path, enforce_file_format=True)
    ai_path = tmp_path / "ai.dcm"
    _orthanc_file(orthanc, study.ai_sr_uid).save_as(ai_path, enforce_file_format=True)
    ai_groups = _groups(_read(ai_path))
    assert _groups(_read(path))["Pneumothorax"].tracking_uid == ai_groups["Pneumothorax"].tracking_uid


def test_republishing_the_same_state_stores_nothing_new_and_a_new_verdict_a_new_sr(
    radiologist: TestClient, study: Study, orthanc: OrthancConnection, tmp_path: Path
) -> None:
    _verdict(radiologist, study, "Pneumothorax", "agree")
    first = _publish(radiologist, study)
    again = _publish(radiologist, study)
    assert again["sop_instance_uid"] == first["sop_instance_uid"] and again["already_stored"] is True
    assert _sr_instances(orthanc, study, str(first["series_uid"])) == [first["sop_instance_uid"]]

    _verdict(radiologist, study, "Pneumothorax", "disagree", reason="false_positive_normal_variant")
    changed = _publish(radiologist, study)
    assert changed["sop_instance_uid"] != first["sop_instance_uid"]
    assert changed["series_uid"] == first["series_uid"]
    assert _sr_instances(orthanc, study, str(first["series_uid"])) == sorted(
        [str(first["sop_instance_uid"]), str(changed["sop_instance_uid"])]
    )
    path = tmp_path / "changed.dcm"
    _retrieve(orthanc, study, changed).save_as(path, enforce_file_format=True)
    assert _evaluation(_groups(_read(path))["Pneumothorax"], ASSESSMENT) == REJECTED


def test_nothing_to_publish_is_a_conflict(radiologist: TestClient, study: Study) -> None:
    response = radiologist.post(f"/api/studies/{study.image.study_uid}/feedback/sr")
    assert response.status_code == 409


def test_a_verdict_on_a_result_whose_sr_was_never_stored_says_so(
    radiologist: TestClient, study: Study, db: sessionmaker[Session]
) -> None:
    """The result row is saved before its SR/SEG: when writing them failed, the verdict still saves, and
    publishing says why it cannot reference the AI SR (not 'instance not in this study's archive')."""
    _verdict(radiologist, study, "Pneumothorax", "agree")
    with transaction(db) as session:
        result = session.get(InferenceResult, int(study.result_id.removeprefix("platform-")))
        assert result is not None
        job = session.get(Job, result.job_id)
        assert job is not None
        job.state, job.reason = JobState.FAILED, "the SR could not be built: AttributeError: spacing"
    response = radiologist.post(f"/api/studies/{study.image.study_uid}/feedback/sr")
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "SR was never stored in the archive (the SR could not be built" in detail, detail
    assert "Your verdicts are saved here" in detail


def test_publishing_needs_a_reading_role(client: TestClient, study: Study) -> None:
    sign_in(client, "governance")
    response = client.post(f"/api/studies/{study.image.study_uid}/feedback/sr")
    assert response.status_code == 403


def test_a_wrong_location_keeps_the_readers_box_beside_the_verdict(
    radiologist: TestClient, study: Study, orthanc: OrthancConnection, tmp_path: Path
) -> None:
    where = {"instance_uid": study.image.instance_uid, "frame": 1, "box": [100.0, 80.0, 30.0, 20.0]}
    _verdict(radiologist, study, "Effusion", "disagree", reason="wrong_location", mark=where)
    path = tmp_path / "feedback.dcm"
    _retrieve(orthanc, study, _publish(radiologist, study)).save_as(path, enforce_file_format=True)
    report = _read(path)
    assert _evaluation(_groups(report)["Effusion"], REASON) == REASONS[Reason.WRONG_LOCATION]
    (located,) = report.get_planar_roi_measurement_groups(graphic_type=hd.sr.GraphicTypeValues.POLYLINE)
    assert located.tracking_identifier == "Effusion location by reader"
    assert located.roi is not None  # the box as drawn right-to-left, stored with its corners in order
    np.testing.assert_allclose(located.roi.value, [[30, 20], [100, 20], [100, 80], [30, 80], [30, 20]])


def test_a_verdict_on_another_vendors_sr_references_that_sr(
    radiologist: TestClient, study: Study, orthanc: OrthancConnection, tmp_path: Path
) -> None:
    source = _orthanc_file(orthanc, study.image.instance_uid)
    vendor = Algorithm("acme.lung", "Acme Lung", "Acme", "7.1", "1.2.826.0.1.3680043.10.1234.99.0")
    finding = FindingResult("Nodule", "Lung nodule", None, 0.7, 0.5, True, [], None)
    foreign = build_sr(
        source, [finding], None, vendor, sop_instance_uid=generate_uid(), series_instance_uid=generate_uid()
    )
    _store(orthanc, foreign)
    result_id = f"foreign-{foreign.SOPInstanceUID}"
    body = {"kind": "finding", "result_id": result_id, "finding_id": f"{result_id}-group-1"}
    _post(radiologist, study, body | {"verdict": "disagree", "reason": "false_positive_other_finding"})
    path = tmp_path / "feedback.dcm"
    _retrieve(orthanc, study, _publish(radiologist, study)).save_as(path, enforce_file_format=True)

    group = _groups(_read(path))["Nodule"]
    assert _evaluation(group, ASSESSMENT) == REJECTED
    assert group.finding_type == hd.sr.CodedConcept("Nodule", "99OPENAIM", "Lung nodule")
    [document] = _items(group, codes.DCM.SourceDocument)
    assert document.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == foreign.SOPInstanceUID
    [name] = _items(group, codes.DCM.AlgorithmName)
    [device] = _items(group, codes.DCM.DeviceObserverUID)
    assert (name.TextValue, device.UID) == ("Acme Lung", vendor.device_uid)
    assert dciodvfy_errors(path) == []
