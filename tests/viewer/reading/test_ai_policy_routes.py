"""Every route that names or returns a study's series goes through the AI policy
(viewer/reading/ai_policy.py): a blinded reader sees no AI series of a study before their impression, and
only admins (and governance) see the series of a model version in shadow mode. The table below lists
those routes, read from the app: a new route that takes a study, a series or an AI finding and is not in
it fails here."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from inference.catalog import Mode
from inference.dicom_results.uids import ResultUids
from openaim.db import transaction
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import (
    Image2D,
    add_result,
    install_model,
    store_chest_image,
    store_result_object,
)
from tests.viewer.app_routes import Route, app_routes, dependencies_of
from tests.viewer.conftest import sign_in
from viewer.access.users import User
from viewer.reading.ai_policy import shown_series, study_series_filter

SERIES = "404 for a hidden series"  # takes ShownSeries
STUDY = "hidden series left out"  # takes StudySeriesFilter
PANEL = "the AI panel's own rule: nothing before a blinded reader's impression; of ours, clinical only"
DICOMWEB = "/dicomweb/studies/{study_uid}/series/{series_uid}"

VISIBILITY: dict[Route, str] = {
    ("GET", "/studies/{study_uid}"): STUDY,
    ("POST", "/api/studies/{study_uid}/done"): "names no series; refused before the impression",
    ("GET", "/dicomweb/studies"): "study level: says a study has an SR or SEG, never what it found",
    ("POST", "/dicomweb/studies"): "STOW-RS (admin): stores, shows nothing",
    ("GET", "/dicomweb/studies/{study_uid}/series"): STUDY,
    ("GET", "/dicomweb/studies/{study_uid}/metadata"): STUDY,
    ("GET", f"{DICOMWEB}/instances"): SERIES,
    ("GET", f"{DICOMWEB}/metadata"): SERIES,
    ("GET", DICOMWEB): SERIES,
    ("GET", DICOMWEB + "/instances/{instance_uid}/frames/{frames}"): SERIES,
    ("GET", DICOMWEB + "/instances/{instance_uid}/rendered"): SERIES,
    ("GET", "/api/studies/{study_uid}/series/{series_uid}/images"): SERIES,
    ("GET", "/api/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/thumbnail.png"): SERIES,
    ("GET", "/api/studies/{study_uid}/series/{series_uid}/overlay-planes"): SERIES,
    (
        "GET",
        "/api/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/overlays/{group}/{frame}.png",
    ): SERIES,
    ("GET", "/api/studies/{study_uid}/foreign/{series_uid}/{instance_uid}/masks/{frame}.png"): SERIES,
    ("GET", "/studies/{study_uid}/ai"): PANEL,
    ("POST", "/studies/{study_uid}/impression"): PANEL,
    ("GET", "/api/ai/findings/{finding_id}/heatmap.png"): "clinical versions only; 403 before the impression",
    ("POST", "/api/studies/{study_uid}/feedback"): "refused before a blinded reader's impression",
    ("GET", "/api/studies/{study_uid}/feedback"): "the reader's own feedback only",
    ("POST", "/api/studies/{study_uid}/feedback/sr"): "stores the reader's own feedback",
}


PATIENT = "AI-POLICY"
EXPLICIT_LE = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
NAMING = ("{study_uid}", "{series_uid}", "{instance_uid}", "{finding_id}")


def _names_images_or_ai(path: str) -> bool:
    return path.startswith("/dicomweb") or any(part in path for part in NAMING)


def test_every_route_that_names_a_study_or_a_series_is_in_the_table(client: TestClient) -> None:
    routes = app_routes(client.app)  # type: ignore[arg-type]
    named = {route for route in routes if _names_images_or_ai(route[1])}
    missing = sorted(named - VISIBILITY.keys())
    assert not missing, f"routes missing from VISIBILITY (decide how the AI policy applies): {missing}"
    assert not sorted(VISIBILITY.keys() - named), "VISIBILITY names routes the app no longer has"
    for route, rule in VISIBILITY.items():
        calls = set(dependencies_of(routes[route]))
        if rule == SERIES:
            assert shown_series in calls, f"{route} must take ShownSeries"
        if rule == STUDY:
            assert study_series_filter in calls, f"{route} must take StudySeriesFilter"
        if "{series_uid}" in route[1]:
            assert rule == SERIES, f"{route} names a series: it must take ShownSeries"


def _series_paths(study_uid: str, series_uid: str) -> list[str]:
    values = {
        "study_uid": study_uid,
        "series_uid": series_uid,
        "instance_uid": generate_uid(),
        "frames": "1",
        "group": "6000",
        "frame": "1",
    }
    return [path.format(**values) for (_, path), rule in VISIBILITY.items() if rule == SERIES]


def _study_paths(study_uid: str) -> list[str]:
    return [path.format(study_uid=study_uid) for (_, path), rule in VISIBILITY.items() if rule == STUDY]


def assert_hidden(reader: TestClient, study_uid: str, series_uid: str, description: str) -> None:
    """Every path of the table answers as if the series were not in the study (the study's answers first:
    they must not wait for a request naming the series to learn of it)."""
    for path in _study_paths(study_uid):
        accept = "application/dicom+json" if path.startswith("/dicomweb") else "text/html"
        response = reader.get(path, headers={"Accept": accept})
        assert response.status_code == 200, (path, response.status_code)
        assert series_uid not in response.text and description not in response.text, path
    for path in _series_paths(study_uid, series_uid):
        response = reader.get(path, headers={"Accept": "*/*"})
        assert response.status_code == 404, (path, response.status_code)
        assert description not in response.text, path
    page = reader.get(f"/studies/{study_uid}", params={"series": series_uid}, headers={"Accept": "text/html"})
    assert page.status_code == 404


def assert_shown(reader: TestClient, study_uid: str, series_uid: str, description: str) -> None:
    metadata = reader.get(f"/dicomweb/studies/{study_uid}/series/{series_uid}/metadata")
    assert metadata.status_code == 200 and description in metadata.text
    listed = reader.get(f"/dicomweb/studies/{study_uid}/series")
    assert series_uid in {item["0020000E"]["Value"][0] for item in listed.json()}
    whole = reader.get(f"/dicomweb/studies/{study_uid}/metadata")
    assert description in whole.text
    page = reader.get(f"/studies/{study_uid}", headers={"Accept": "text/html"})
    assert description in _ai_strip(page.text)


def _ai_strip(html: str) -> str:
    found = re.search(r'<ul class="series-ai" data-testid="ai-series">(.*?)</ul>', html, re.S)
    return found.group(1) if found else ""


def switch(client: TestClient, username: str) -> TestClient:
    """The same client (its app's event loop) signed out and in again as someone else."""
    client.post("/signout", follow_redirects=False)
    client.cookies.clear()
    return sign_in(client, username)


@pytest.fixture
def study(orthanc: OrthancConnection, shared_data: Path) -> Image2D:
    return store_chest_image(orthanc, shared_data, "20250704", patient_id=PATIENT)


def test_a_blinded_reader_sees_no_ai_series_before_the_impression(
    client: TestClient, db: sessionmaker[Session], orthanc: OrthancConnection, study: Image2D
) -> None:
    with transaction(db) as session:
        session.execute(update(User).where(User.username == "radiologist").values(blinded_read=True))
    reader = sign_in(client, "radiologist")
    opened = reader.get(f"/studies/{study.study_uid}", headers={"Accept": "text/html"})
    assert opened.status_code == 200  # the policy has looked at the study: it has no AI series yet
    findings = store_result_object(orthanc, study, "SR", "Vendor X: nodule 0.93", series_number=700)
    mask = store_result_object(orthanc, study, "SEG", "Vendor X: nodule mask", series_number=701)

    assert_hidden(reader, study.study_uid, findings, "nodule 0.93")
    assert_hidden(reader, study.study_uid, mask, "nodule mask")
    images = reader.get(f"/api/studies/{study.study_uid}/series/{study.series_uid}/images")
    assert images.status_code == 200  # the images themselves are read blind

    given = reader.post(f"/studies/{study.study_uid}/impression", data={"impression": "abnormal"})
    assert given.status_code == 200
    assert_shown(reader, study.study_uid, findings, "nodule 0.93")
    assert_shown(reader, study.study_uid, mask, "nodule mask")


def test_a_shadow_models_series_are_seen_by_those_who_monitor_models_only(
    client: TestClient,
    db: sessionmaker[Session],
    settings: Settings,
    orthanc: OrthancConnection,
    study: Image2D,
    tmp_path: Path,
) -> None:
    version = install_model(db, settings, tmp_path / "model", Mode.SHADOW)
    add_result(db, study, version, "urgent", {})
    uids = ResultUids.of(study.series_uid, version.device_uid)
    store_result_object(orthanc, study, "SR", "AI results: shadow trial", series_uid=uids.sr_series)
    heatmaps = "AI heatmaps: shadow trial"
    store_result_object(orthanc, study, "SEG", heatmaps, series_number=9902, series_uid=uids.seg_series)

    reader = sign_in(client, "radiologist")
    assert_hidden(reader, study.study_uid, uids.sr_series, "AI results: shadow trial")
    assert_hidden(reader, study.study_uid, uids.seg_series, "AI heatmaps: shadow trial")

    admin = switch(reader, "admin")
    assert_shown(admin, study.study_uid, uids.sr_series, "AI results: shadow trial")
    changed = admin.post(
        f"/admin/models/{version.model_id}/mode",
        data={"version": version.version, "mode": "clinical"},
        follow_redirects=False,
    )
    assert changed.status_code == 303
    reader = switch(admin, "radiologist")  # shown at once: the change forgot what the memo kept
    assert_shown(reader, study.study_uid, uids.sr_series, "AI results: shadow trial")


def test_pixels_cached_for_one_user_are_not_served_to_another_under_a_visible_series(
    client: TestClient,
    db: sessionmaker[Session],
    orthanc: OrthancConnection,
    shared_data: Path,
    study: Image2D,
) -> None:
    """The frame and thumbnail caches are keyed by instance: an AI instance named under a visible image
    series is refused, whoever had it drawn or decoded before."""
    hidden = _pixels_in_an_ai_series(orthanc, shared_data, study)
    with transaction(db) as session:
        session.execute(update(User).where(User.username == "radiologist").values(blinded_read=True))
    admin = sign_in(client, "admin")
    own_series = f"/api/studies/{study.study_uid}/series/{hidden.series_uid}/instances/{hidden.instance_uid}"
    drawn = admin.get(f"{own_series}/thumbnail.png")
    assert drawn.status_code == 200 and drawn.headers["content-type"] == "image/png"
    frames = f"/dicomweb/studies/{study.study_uid}/series/{{}}/instances/{hidden.instance_uid}/frames/1"
    assert admin.get(frames.format(hidden.series_uid), headers={"Accept": EXPLICIT_LE}).status_code == 200
    reader = switch(admin, "radiologist")
    images = f"/api/studies/{study.study_uid}/series/{study.series_uid}"
    assert reader.get(f"{images}/instances/{hidden.instance_uid}/thumbnail.png").status_code == 404
    assert reader.get(frames.format(study.series_uid), headers={"Accept": EXPLICIT_LE}).status_code == 404


def _pixels_in_an_ai_series(orthanc: OrthancConnection, shared_data: Path, study: Image2D) -> Image2D:
    """The chest image again, in a series of the study that calls itself a SEG: pixels the blinded reader
    may not see."""
    dataset = pydicom.dcmread(shared_data / "dicom" / "dx_chest" / "dx_image.dcm")
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study.study_uid, generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.Modality, dataset.SeriesNumber = "SEG", 702
    dataset.PatientID = PATIENT  # Orthanc files a study under its patient: the same one
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with orthanc.client() as archive:
        archive.post("/instances", content=buffer.getvalue()).raise_for_status()
    return Image2D(study.study_uid, str(dataset.SeriesInstanceUID), str(dataset.SOPInstanceUID))
