"""Worklist, study page and DICOMweb proxy against a real Orthanc: right data, hostile data shown as
text, bad input refused with clear answers, and nothing malformed ever reaches Orthanc."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openaim.audit import AuditEvent
from orthanc import OrthancConnection
from tests.viewer.conftest import sign_in
from tests.viewer.study_index_fixtures import index_studies

HOSTILE_NAME = "<script>alert(1)</script>^Evil"


def _dicom_bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def studies(orthanc: OrthancConnection, shared_data: Path) -> dict[str, str]:
    """The 3-slice CT and a chest DX whose PatientName is a script tag, stored straight in Orthanc."""
    ct_study = ""
    with orthanc.client() as client:
        for path in sorted((shared_data / "dicom" / "ct_3slice").glob("*.dcm")):
            client.post("/instances", content=path.read_bytes()).raise_for_status()
            ct_study = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        hostile = pydicom.dcmread(shared_data / "dicom" / "dx_chest" / "dx_image.dcm")
        hostile.PatientName = HOSTILE_NAME
        hostile.PatientID = "HOSTILE-1"
        hostile.StudyInstanceUID = generate_uid()
        hostile.SeriesInstanceUID = generate_uid()
        hostile.SOPInstanceUID = generate_uid()
        hostile.file_meta.MediaStorageSOPInstanceUID = hostile.SOPInstanceUID
        client.post("/instances", content=_dicom_bytes(hostile)).raise_for_status()
    hostile_rendered = (
        f"/dicomweb/studies/{hostile.StudyInstanceUID}/series/{hostile.SeriesInstanceUID}"
        f"/instances/{hostile.SOPInstanceUID}/rendered"
    )
    return {"ct": ct_study, "hostile": str(hostile.StudyInstanceUID), "hostile_rendered": hostile_rendered}


@pytest.fixture
def listed(studies: dict[str, str], orthanc: OrthancConnection, db: sessionmaker[Session]) -> dict[str, str]:
    """The studies, in this test's study index (what the worklist lists)."""
    index_studies(orthanc, db, studies["ct"], studies["hostile"])
    return studies


def _instance_count(orthanc: OrthancConnection) -> int:
    with orthanc.client() as client:
        return int(client.get("/statistics").json()["CountInstances"])


def test_worklist_lists_studies_with_their_main_attributes(
    radiologist: TestClient, listed: dict[str, str], orthanc: OrthancConnection
) -> None:
    studies = listed
    with orthanc.client() as client:  # other tests may add AI results (SR, SEG) to the shared CT study
        orthanc_id = client.post("/tools/lookup", content=studies["ct"]).json()[0]["ID"]
        series = client.get(f"/studies/{orthanc_id}/series").json()
    images = sum(len(item["Instances"]) for item in series if item["MainDicomTags"]["Modality"] == "CT")
    page = radiologist.get("/worklist").text
    row = page.split(f'data-study-uid="{studies["ct"]}"')[1].split("</tr>")[0]
    assert ">JANCT000</a>" in row  # patient name (a single component)
    assert "<td>99000</td>" in row  # patient ID
    assert "<td>2003-04-17</td>" in row
    assert "CT" in row
    assert f'<td class="num">{images}</td>' in row  # images: the AI's SR and SEG are not counted


def test_worklist_searches_by_patient_id_with_htmx_partial(radiologist: TestClient, listed) -> None:
    studies = listed
    response = radiologist.get("/worklist", params={"q": "HOSTILE-1"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text  # only the rows
    assert studies["hostile"] in response.text and studies["ct"] not in response.text


def test_script_in_patient_name_is_shown_as_text(radiologist: TestClient, listed) -> None:
    studies = listed
    for url in ("/worklist", f"/studies/{studies['hostile']}"):
        page = radiologist.get(url).text
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_study_page_shows_the_series_images_and_is_audited(
    radiologist: TestClient, studies, db: sessionmaker[Session]
) -> None:
    page = radiologist.get(f"/studies/{studies['ct']}").text
    # One thumbnail per image series (its middle slice); the canvas viewport draws the frames themselves.
    image_urls = [part.split('"')[0] for part in page.split('src="')[1:] if "/thumbnail.png" in part]
    assert len(image_urls) == 1
    image = radiologist.get(image_urls[0])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png", image.text
    picture = np.asarray(Image.open(io.BytesIO(image.content)))
    assert max(picture.shape) == 128 and picture.std() > 10  # drawn by the platform, not a blank tile
    with db() as session:
        opened = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "DICOMInstancesAccessed")
        ).all()
    assert [(row.object_uid, row.username) for row in opened] == [(studies["ct"], "radiologist")]


def test_unknown_study_uid_gets_404(radiologist: TestClient, studies) -> None:
    unknown = "1.2.826.0.1.3680043.8.498.99999999999999999999"
    assert radiologist.get(f"/studies/{unknown}").status_code == 404
    assert radiologist.get(f"/dicomweb/studies/{unknown}/metadata").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/studies/1.2.abc",
        "/studies/1..2",
        "/studies/" + "1." * 40 + "1",
        "/dicomweb/studies/1.2.3/series/not-a-uid/metadata",
        "/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/0",
        "/dicomweb/studies/1.2.3/series/1.2.4/instances/%2e%2e/rendered",
    ],
)
def test_malformed_uid_gets_422_and_never_reaches_orthanc(
    radiologist: TestClient, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = radiologist.app.state.archive
    calls: list[str] = []
    for method in ("open_stream", "_search"):
        original = getattr(archive, method)

        async def spy(*args, _original=original, **kwargs):
            calls.append(str(args))
            return await _original(*args, **kwargs)

        monkeypatch.setattr(archive, method, spy)
    response = radiologist.get(path)
    assert response.status_code in (404, 422)
    if "%2e" not in path:
        assert response.status_code == 422
    assert calls == []


def test_malformed_dicom_upload_gets_400_stores_nothing_and_service_goes_on(
    admin: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    good = (shared_data / "dicom" / "dx_chest" / "dx_image.dcm").read_bytes()
    before = _instance_count(orthanc)
    for body in (b"this is not DICOM", good[: len(good) // 2], b"DICM" * 40):
        response = admin.post(
            "/dicomweb/studies", content=body, headers={"Content-Type": "application/dicom"}
        )
        assert response.status_code == 400
        assert "not valid DICOM" in response.json()["detail"] or "truncated" in response.json()["detail"]
    boundary = "openaim-test-boundary"
    mixed = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + good
        + f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + b"garbage"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    response = admin.post("/dicomweb/studies", content=mixed, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert "part 2" in response.json()["detail"]
    assert _instance_count(orthanc) == before  # the good part 1 was not stored either
    assert admin.get("/worklist").status_code == 200


def test_valid_stow_upload_is_stored(
    admin: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    dataset = pydicom.dcmread(shared_data / "dicom" / "dx_chest" / "dx_image.dcm")
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    before = _instance_count(orthanc)
    response = admin.post(
        "/dicomweb/studies", content=_dicom_bytes(dataset), headers={"Content-Type": "application/dicom"}
    )
    assert response.status_code == 200
    stored = response.json()["00081199"]["Value"][0]["00081155"]["Value"]
    assert stored == [dataset.SOPInstanceUID]
    assert _instance_count(orthanc) == before + 1


def test_roles_are_enforced(client: TestClient, studies) -> None:
    sign_in(client, "governance")
    assert client.get("/worklist").status_code == 403
    client.cookies.clear()
    sign_in(client, "radiologist")
    response = client.post("/dicomweb/studies", content=b"x", headers={"Content-Type": "application/dicom"})
    assert response.status_code == 403


def test_worklist_search_accepts_dicom_wildcards(radiologist: TestClient, listed) -> None:
    studies = listed
    rows = radiologist.get("/worklist", params={"q": "HOSTILE-*"}, headers={"HX-Request": "true"})
    assert studies["hostile"] in rows.text and studies["ct"] not in rows.text


def test_rendered_frame_answers_a_browsers_image_accept_header(radiologist: TestClient, studies) -> None:
    image_url = studies["hostile_rendered"]
    chromium_accept = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
    response = radiologist.get(image_url, headers={"Accept": chromium_accept})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"


def test_pixels_may_be_cached_privately_but_pages_and_searches_never(
    radiologist: TestClient, studies
) -> None:
    page = radiologist.get(f"/studies/{studies['hostile']}")
    assert page.headers.get_list("cache-control") == ["no-store"]
    image_url = next(part.split('"')[0] for part in page.text.split('src="')[1:] if "/thumbnail.png" in part)
    assert radiologist.get(image_url).headers.get_list("cache-control") == [
        "private, max-age=86400, immutable"
    ]
    search = radiologist.get("/dicomweb/studies", headers={"Accept": "application/dicom+json"})
    assert search.headers.get_list("cache-control") == ["no-store"]
