"""Case packs: real DICOM fixtures with identifiers planted everywhere an identifier can hide (top level,
nested sequences, private attributes, SR free text, file meta) come out with none of them left, every UID
remapped the same way across the pack (so SEG and SR references still land on the images in the pack),
every date moved by one whole-day shift, and the pixels untouched. Then the same through the route,
against a real Orthanc."""

from __future__ import annotations

import copy
import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom import DataElement, Dataset
from pydicom.uid import UID_dictionary, generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openaim.audit import AuditEvent
from orthanc import OrthancConnection
from tests.viewer.conftest import sign_in
from viewer.case_packs.build import (
    MAX_SHIFT_DAYS,
    MIN_SHIFT_DAYS,
    CasePackError,
    build_case_pack,
)

PATIENT_NAME = "Qwzplanted^Patient^Middle"
OTHER_NAME = "Vexplanted^Second"
THIRD_NAME = "Jorplanted^Third"
PATIENT_ID = "PID-QWZ-4471"
OTHER_PATIENT_ID = "OTHERPID-QWZ-9"
BIRTH_DATE = "19610203"
ACCESSION = "ACCQWZ5521"
INSTITUTION = "Qwzplanted General Hospital"
REFERRER = "Referrerqwz^Doctor"
OPERATOR = "Operatorqwz^Nested"
STATION = "STATIONQWZ"
DESCRIPTION = "Study of Qwzplanted"
OBSERVER = "Observerqwz^Sr"
PLANTED = (
    PATIENT_NAME.split("^")[0],
    OTHER_NAME.split("^")[0],
    THIRD_NAME.split("^")[0],
    PATIENT_ID,
    OTHER_PATIENT_ID,
    BIRTH_DATE,
    ACCESSION,
    INSTITUTION,
    REFERRER.split("^")[0],
    OPERATOR.split("^")[0],
    STATION,
    DESCRIPTION,
    OBSERVER.split("^")[0],
)
SECRET = "unit-test-secret"
FILE_NUMBER = re.compile(r"-(\d{4})\.dcm$")


def _elements(dataset: Dataset, path: str = "") -> Iterator[tuple[str, DataElement]]:
    """Every element, sequences walked to the bottom."""
    for element in dataset:
        name = f"{path}{element.keyword or element.tag}"
        yield name, element
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                yield from _elements(item, f"{name}[{index}].")


def _all_elements(dataset: Dataset) -> Iterator[tuple[str, DataElement]]:
    yield from _elements(dataset.file_meta, "meta.")
    yield from _elements(dataset)


def _text(element: DataElement) -> str:
    value = element.value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list | pydicom.multival.MultiValue):
        return "\\".join(str(item) for item in value)
    return "" if value is None else str(value)


def _instance_uids(datasets: list[Dataset]) -> set[str]:
    """Every UID that could link back to the archive (not SOP classes, transfer syntaxes...)."""
    found = set()
    for dataset in datasets:
        for _, element in _all_elements(dataset):
            if element.VR != "UI" or element.keyword.endswith("ClassUID"):
                continue
            values = element.value if isinstance(element.value, list) else [element.value]
            found |= {str(uid) for uid in values if uid and str(uid) not in UID_dictionary}
    return found


def assert_nothing_identifies(output: Dataset, needles: tuple[str, ...], original_uids: set[str]) -> None:
    """No planted value (case-insensitive, inside any value), no original UID, no private attribute."""
    for name, element in _all_elements(output):
        assert not element.tag.is_private, f"private attribute left: {name}"
        if element.VR == "SQ":
            continue
        text = _text(element).upper()
        for needle in needles:
            assert needle.upper() not in text, f"{needle!r} left in {name}"
        if element.VR == "UI":
            assert not set(text.split("\\")) & original_uids, f"original UID left in {name}"


def _read(path: Path) -> Dataset:
    return pydicom.dcmread(path)


def _plant_patient(dataset: Dataset, name: str) -> None:
    dataset.PatientName = name
    dataset.PatientID = PATIENT_ID if name == PATIENT_NAME else f"{PATIENT_ID}-{name[:3]}"
    dataset.OtherPatientIDs = OTHER_PATIENT_ID
    dataset.PatientBirthDate = BIRTH_DATE
    dataset.AccessionNumber = ACCESSION
    dataset.InstitutionName = INSTITUTION
    dataset.ReferringPhysicianName = REFERRER
    dataset.StudyDescription = DESCRIPTION
    dataset.private_block(0x0011, "QWZ PLANTED", create=True).add_new(0x01, "LO", name)
    equipment = Dataset()  # a kept sequence: names and places inside it
    equipment.Manufacturer = "Any"
    equipment.InstitutionName = INSTITUTION
    equipment.OperatorsName = OPERATOR
    equipment.StationName = STATION
    dataset.ContributingEquipmentSequence = [equipment]
    request = Dataset()  # a removed sequence
    request.RequestedProcedureDescription = DESCRIPTION
    request.ScheduledProcedureStepDescription = name
    dataset.RequestAttributesSequence = [request]


def _plant_sr(sr: Dataset) -> None:
    observer = Dataset()
    observer.RelationshipType = "HAS OBS CONTEXT"
    observer.ValueType = "PNAME"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = "121008", "DCM"
    concept.CodeMeaning = "Person Observer Name"
    observer.ConceptNameCodeSequence = [concept]
    observer.PersonName = OBSERVER
    sr.ContentSequence.insert(0, observer)
    text_items = [element for _, element in _elements(sr) if element.keyword == "TextValue"]
    text_items[0].value = f"seen by {OTHER_NAME}"


def _plant_seg(seg: Dataset) -> None:
    nested = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    nested.private_block(0x0013, "QWZ NESTED", create=True).add_new(0x01, "LO", THIRD_NAME)


@pytest.fixture(scope="module")
def planted(shared_data: Path) -> dict[str, list[Dataset]]:
    """Three patients: a CT then a DX years later for the first, an SR on its CT, a SEG on its CTs."""
    dicom = shared_data / "dicom"
    groups = {
        "ct": [_read(path) for path in sorted((dicom / "ct_3slice").glob("*.dcm"))],
        "dx": [_read(dicom / "dx_chest" / "dx_image.dcm")],
        "sr": [
            _read(dicom / "foreign_ai" / "highdicom" / "sr_document.dcm"),
            _read(dicom / "transfer_syntax" / "pydicom_CT_small.dcm"),
        ],
        "seg": [_read(dicom / "foreign_ai" / "highdicom" / "seg_image_ct_binary.dcm")]
        + [_read(path) for path in sorted((dicom / "foreign_ai" / "referenced_ct_16x16").glob("*.dcm"))],
    }
    names = {"ct": PATIENT_NAME, "dx": PATIENT_NAME, "sr": OTHER_NAME, "seg": THIRD_NAME}
    for group, datasets in groups.items():
        for dataset in datasets:
            _plant_patient(dataset, names[group])
    _plant_sr(groups["sr"][0])
    _plant_seg(groups["seg"][0])
    return groups


def _pack(datasets: list[Dataset], secret: str = SECRET) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(build_case_pack(datasets, secret))) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _dicom_files(members: dict[str, bytes]) -> dict[int, Dataset]:
    """The pack's DICOM files by the input position they came from (their file number)."""
    found: dict[int, Dataset] = {}
    for name, data in members.items():
        number = FILE_NUMBER.search(name)
        if number:
            found[int(number.group(1)) - 1] = pydicom.dcmread(io.BytesIO(data))
    return found


def _inputs(planted: dict[str, list[Dataset]]) -> list[Dataset]:
    return [dataset for group in ("ct", "dx", "sr", "seg") for dataset in planted[group]]


def test_no_identifier_is_left_anywhere(planted: dict[str, list[Dataset]]) -> None:
    inputs = _inputs(planted)
    original_uids = _instance_uids(inputs)
    members = _pack(inputs)
    outputs = _dicom_files(members)
    assert len(outputs) == len(inputs)
    for output in outputs.values():
        assert_nothing_identifies(output, PLANTED, original_uids)
        assert output.PatientIdentityRemoved == "YES"
        assert output.PatientName == output.PatientID and re.fullmatch(r"CASE\d{3}", output.PatientID)
        assert output.PatientBirthDate == ""
        assert "StudyDescription" not in output  # basic profile, no Clean Descriptors option
        assert [item.CodeValue for item in output.DeidentificationMethodCodeSequence] == [
            "113100",
            "113107",
            "113104",
        ]
        assert output.LongitudinalTemporalInformationModified == "MODIFIED"
    for name, data in members.items():  # file names, manifest and README too
        text = name + data.decode("latin-1")
        assert not [needle for needle in PLANTED if needle.upper() in text.upper()], name


def test_the_planted_values_were_there_to_find(planted: dict[str, list[Dataset]]) -> None:
    """The check above can fail: on the inputs it finds every planted value."""
    seen = set()
    for dataset in _inputs(planted):
        for _, element in _all_elements(dataset):
            if element.VR != "SQ":
                seen |= {needle for needle in PLANTED if needle.upper() in _text(element).upper()}
    assert seen == set(PLANTED)
    with pytest.raises(AssertionError, match="private attribute"):
        assert_nothing_identifies(planted["seg"][0], (), set())


def _date(value: str) -> date:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def test_dates_move_by_one_whole_day_shift_for_the_pack(planted: dict[str, list[Dataset]]) -> None:
    inputs = _inputs(planted)
    outputs = _dicom_files(_pack(inputs))
    shifts = set()
    for index, output in outputs.items():
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            if inputs[index].get(keyword):
                shifts.add((_date(inputs[index].get(keyword)) - _date(output.get(keyword))).days)
        if inputs[index].get("StudyTime"):
            assert output.StudyTime == inputs[index].StudyTime  # whole days: times of day stay
    assert len(shifts) == 1
    assert MIN_SHIFT_DAYS <= shifts.pop() <= MAX_SHIFT_DAYS
    ct, dx = outputs[0], outputs[len(planted["ct"])]  # one patient, two studies 17 years apart
    assert ct.PatientID == dx.PatientID
    original = _date(planted["dx"][0].StudyDate) - _date(planted["ct"][0].StudyDate)
    assert _date(dx.StudyDate) - _date(ct.StudyDate) == original


def _referenced(dataset: Dataset, keyword: str = "ReferencedSOPInstanceUID") -> set[str]:
    return {str(element.value) for _, element in _elements(dataset) if element.keyword == keyword}


def test_seg_and_sr_reference_the_remapped_images_in_the_pack(planted: dict[str, list[Dataset]]) -> None:
    outputs = list(_dicom_files(_pack(planted["sr"] + planted["seg"])).values())
    sr, sr_image, seg, *seg_images = outputs
    assert _referenced(sr) == {sr_image.SOPInstanceUID}
    assert sr.StudyInstanceUID == sr_image.StudyInstanceUID
    assert _referenced(seg) == {image.SOPInstanceUID for image in seg_images}
    assert _referenced(seg, "SeriesInstanceUID") >= {seg_images[0].SeriesInstanceUID}
    assert seg.FrameOfReferenceUID == seg_images[0].FrameOfReferenceUID
    assert seg.file_meta.MediaStorageSOPInstanceUID == seg.SOPInstanceUID
    assert seg.SOPClassUID == planted["seg"][0].SOPClassUID  # well-known UIDs are kept


def test_pixels_are_unchanged_and_every_file_reads_back(planted: dict[str, list[Dataset]]) -> None:
    inputs = _inputs(planted)
    outputs = _dicom_files(_pack(inputs))
    images = {index: output for index, output in outputs.items() if "PixelData" in inputs[index]}
    assert len(images) == len(outputs) - 1  # all but the SR
    for index, output in images.items():
        given = inputs[index].PixelData  # the DX fixture's is odd-length: written, it gains one pad byte
        assert output.PixelData == given + b"\x00" * (len(given) % 2)
        assert np.array_equal(output.pixel_array, inputs[index].pixel_array)


def test_same_secret_maps_the_same_and_another_secret_does_not(planted: dict[str, list[Dataset]]) -> None:
    first = _dicom_files(_pack(planted["ct"]))[0]
    again = _dicom_files(_pack(planted["ct"]))[0]
    other = _dicom_files(_pack(planted["ct"], "another secret"))[0]
    assert first.SOPInstanceUID == again.SOPInstanceUID != other.SOPInstanceUID
    assert planted["ct"][0].PatientName == PATIENT_NAME  # the caller's datasets are left as they were


def test_burned_in_annotation_is_left_out_and_listed(planted: dict[str, list[Dataset]]) -> None:
    burned = copy.deepcopy(planted["dx"][0])
    burned.BurnedInAnnotation = "YES"
    members = _pack([planted["ct"][0], burned])
    manifest = json.loads(members["manifest.json"])
    assert [entry["status"] for entry in manifest["instances"]] == ["de-identified", "left out"]
    assert manifest["instances"][1]["file"] is None
    assert len(_dicom_files(members)) == 1
    assert "look at the pixels" in manifest["instances"][0]["notes"][0]  # CT does not say: flagged
    with pytest.raises(CasePackError):
        build_case_pack([burned], SECRET)


# The route, against a real Orthanc


def _renew_uids(datasets: list[Dataset]) -> None:
    """Fresh UIDs, consistent across the group, so that these copies do not collide in the shared Orthanc."""
    mapping: dict[str, str] = {}
    for dataset in datasets:
        for _, element in _all_elements(dataset):
            known = str(element.value) in UID_dictionary or element.keyword.endswith("ClassUID")
            if element.VR == "UI" and element.value and not known:
                element.value = mapping.setdefault(str(element.value), generate_uid())


def _stored(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class Archived:
    studies: list[str]
    uids: set[str]  # the stored copies' UIDs: none may come back
    count: int


@pytest.fixture(scope="module")
def archived(orthanc: OrthancConnection, planted: dict[str, list[Dataset]]) -> Archived:
    groups = {group: copy.deepcopy(datasets) for group, datasets in planted.items()}
    for datasets in groups.values():
        _renew_uids(datasets)
    every = [dataset for datasets in groups.values() for dataset in datasets]
    with orthanc.client() as client:
        for dataset in every:
            client.post("/instances", content=_stored(dataset)).raise_for_status()
    studies = list(dict.fromkeys(str(dataset.StudyInstanceUID) for dataset in every))
    return Archived(studies, _instance_uids(every), len(every))


def test_reviewer_downloads_a_pack_with_nothing_left(
    client: TestClient, archived: Archived, db: sessionmaker[Session]
) -> None:
    sign_in(client, "reviewer")
    response = client.post("/api/case-packs", json=archived.studies)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    outputs = _dicom_files(members)
    assert len(outputs) == archived.count
    for output in outputs.values():
        assert_nothing_identifies(output, PLANTED, archived.uids)
    with db() as session:
        exports = session.scalars(select(AuditEvent).where(AuditEvent.event_type == "Export")).all()
    assert sorted(str(event.object_uid) for event in exports) == sorted(archived.studies)
    assert {event.username for event in exports} == {"reviewer"}
    trail = json.dumps([event.detail for event in exports])
    assert not [needle for needle in PLANTED if needle.upper() in trail.upper()]


def test_radiologist_may_not_export(radiologist: TestClient, archived: Archived) -> None:
    assert radiologist.post("/api/case-packs", json=archived.studies).status_code == 403


@pytest.mark.parametrize(
    "body",
    [["1.2.abc"], ["1.2.3;rm"], [], ["1." + "1" * 70], [f"1.2.{n}" for n in range(51)], {"uid": "1.2"}],
)
def test_malformed_requests_are_refused(client: TestClient, body: object) -> None:
    sign_in(client, "reviewer")
    assert client.post("/api/case-packs", json=body).status_code == 422


def test_unknown_study_is_404(client: TestClient, archived: Archived) -> None:
    sign_in(client, "reviewer")
    assert client.post("/api/case-packs", json=["1.2.826.0.1.3680043.8.498.424242"]).status_code == 404
