"""Demo seeding makes well-formed, clearly marked DX chest images and loads them once into Orthanc."""

from __future__ import annotations

import io
import re
import shutil
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from openaim.seed import (
    DIGITAL_XRAY_FOR_PRESENTATION,
    cxr_to_dicom,
    demo_uids,
    encode,
    seed,
    source_image_name,
)
from orthanc import OrthancConnection
from orthanc.seeding import OrthancSeedArchive

RGBA_IMAGE = "full/00001369_000.png"
DAY = date(2024, 3, 15)
UID_FORMAT = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def first_small_png(shared_data: Path) -> Path:
    return sorted((shared_data / "cxr14" / "small").glob("*.png"))[0]


def instance_count(orthanc: OrthancConnection) -> int:
    with orthanc.client() as client:
        return int(client.get("/statistics").json()["CountInstances"])


def stored_uids(client: httpx.Client, uids: list[str]) -> set[str]:
    query = {"SOPInstanceUID": "\\".join(uids)}
    found = client.post("/tools/find", json={"Level": "Instance", "Query": query, "Expand": True})
    return {item["MainDicomTags"]["SOPInstanceUID"] for item in found.json()}


def test_demo_image_is_a_marked_dx_chest_pa_with_the_png_pixels(shared_data: Path) -> None:
    png = first_small_png(shared_data)
    dataset = pydicom.dcmread(io.BytesIO(encode(cxr_to_dicom(png, reference_date=DAY))))

    assert dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert dataset.SOPClassUID == DIGITAL_XRAY_FOR_PRESENTATION
    assert dataset.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID
    assert (dataset.Modality, dataset.BodyPartExamined, dataset.ViewPosition) == ("DX", "CHEST", "PA")
    assert dataset.PresentationIntentType == "FOR PRESENTATION"
    assert dataset.PhotometricInterpretation == "MONOCHROME2"
    assert list(dataset.PatientOrientation) == ["L", "F"]
    assert np.array_equal(dataset.pixel_array, np.asarray(Image.open(png)))
    assert [float(v) for v in dataset.ImagerPixelSpacing] == [0.572, 0.572]
    assert dataset.BurnedInAnnotation == "NO"

    # Clearly demo data, everywhere a person or a PACS would look.
    assert str(dataset.PatientName).startswith("DEMO^")
    assert dataset.PatientID.startswith("DEMO-")
    assert dataset.InstitutionName == "openaim DEMO DATA"
    assert dataset.StudyDescription.startswith("DEMO DATA")
    assert "not a real patient" in dataset.ImageComments
    assert "not a real patient" in dataset.PatientComments
    assert dataset.PatientSex in {"F", "M"}
    assert 0 <= (DAY - date.fromisoformat(dataset.StudyDate)).days < 28
    assert date.fromisoformat(dataset.PatientBirthDate) < date.fromisoformat(dataset.StudyDate)
    # The NIH file name survives, so results can be mapped back to labels.csv.
    assert source_image_name(dataset) == png.name


def test_uids_and_contents_are_deterministic(shared_data: Path) -> None:
    png = first_small_png(shared_data)
    first = cxr_to_dicom(png, reference_date=DAY)
    again = cxr_to_dicom(png, reference_date=DAY)
    other = cxr_to_dicom(shared_data / "cxr14" / RGBA_IMAGE, reference_date=DAY)

    uids = [first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID]
    assert uids == [again.StudyInstanceUID, again.SeriesInstanceUID, again.SOPInstanceUID]
    assert tuple(uids) == demo_uids(png.name)
    assert encode(first) == encode(again)
    assert len(set(uids)) == 3
    assert other.SOPInstanceUID not in uids and other.StudyInstanceUID not in uids
    for uid in uids:
        assert UID_FORMAT.match(uid) and len(uid) <= 64


def test_the_rgba_image_becomes_greyscale(shared_data: Path) -> None:
    png = shared_data / "cxr14" / RGBA_IMAGE
    assert Image.open(png).mode == "RGBA"
    dataset = cxr_to_dicom(png, reference_date=DAY)
    assert (dataset.Rows, dataset.Columns, dataset.SamplesPerPixel) == (1024, 1024, 1)
    rgba = np.asarray(Image.open(png))
    assert np.array_equal(dataset.pixel_array, rgba[..., 0])
    assert [float(v) for v in dataset.ImagerPixelSpacing] == [0.143, 0.143]


def test_seeding_stores_everything_once_and_a_second_run_adds_nothing(
    orthanc: OrthancConnection, shared_data: Path
) -> None:
    fixtures = sorted((shared_data / "dicom").rglob("*.dcm"))
    images = sorted((shared_data / "cxr14" / "full").glob("*.png"))[:4]
    expected = {demo_uids(png.name).instance for png in images} | {
        str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in fixtures
    }
    calls: list[tuple[int, int, str]] = []
    before = instance_count(orthanc)

    with OrthancSeedArchive(orthanc) as archive:
        report = seed(archive, shared_data, limit=4, progress=lambda *call: calls.append(call))

    assert report.failed == {}
    assert report.total == len(images) + len(fixtures)
    # Several fixtures are one image in several transfer syntaxes: stored once, the rest present.
    assert len(expected) < report.total
    assert report.added <= len(expected) <= report.added + report.already_present
    assert instance_count(orthanc) - before == report.added
    with orthanc.client() as client:
        assert stored_uids(client, sorted(expected)) == expected
        dx_fixture = shared_data / "dicom" / "dx_chest" / "dx_image.dcm"
        uid = str(pydicom.dcmread(dx_fixture).SOPInstanceUID)
        found = client.post("/tools/lookup", content=uid).json()[0]["ID"]
        assert client.get(f"/instances/{found}/file").content == dx_fixture.read_bytes()

    done = [call[0] for call in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert done[-1] == calls[-1][1] == report.total
    assert all(call[1] == report.total for call in calls)

    with OrthancSeedArchive(orthanc) as archive:
        again = seed(archive, shared_data, limit=4)
    assert (again.added, again.failed) == (0, {})
    assert again.already_present == report.total
    assert instance_count(orthanc) - before == report.added


def test_a_broken_file_is_reported_and_the_rest_are_stored(
    orthanc: OrthancConnection, shared_data: Path, tmp_path: Path
) -> None:
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    (dicom / "garbage.dcm").write_bytes(b"not DICOM at all " * 20)
    truncated = cxr_to_dicom(first_small_png(shared_data), reference_date=DAY)
    truncated.SOPInstanceUID = truncated.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    raw = encode(truncated)
    (dicom / "truncated.dcm").write_bytes(raw[: len(raw) // 2])
    good = dicom / "good.dcm"
    shutil.copy(shared_data / "dicom" / "ct_3slice" / "01.dcm", good)

    with OrthancSeedArchive(orthanc) as archive:
        report = seed(archive, tmp_path)

    assert set(report.failed) == {"dicom/garbage.dcm", "dicom/truncated.dcm"}
    assert "2 failed" in report.summary() and "dicom/truncated.dcm: " in report.summary()
    assert report.added + report.already_present == 1
    with orthanc.client() as client:
        uid = str(pydicom.dcmread(good, stop_before_pixels=True).SOPInstanceUID)
        assert stored_uids(client, [uid]) == {uid}
        assert stored_uids(client, [str(truncated.SOPInstanceUID)]) == set()
