"""The AI panel of the study page: this platform's clinical results with their overlays, banners and
model card; never a shadow result; a blinded read that keeps the unaided impression; an audit row per
result shown."""

from __future__ import annotations

import html as html_module
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from inference.catalog import Mode
from inference.results import Finding
from openaim.audit import AuditEvent
from openaim.db import transaction
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import (
    HEATMAP_REGION,
    Image2D,
    add_result,
    heatmap_png,
    install_model,
    renumbered,
    store_chest_image,
)
from tests.viewer.viewport_files import store
from viewer.access.users import User
from viewer.ai_results.heatmaps import colour_table
from viewer.reading.reads import StudyRead

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def study(
    orthanc: OrthancConnection,
    shared_data: Path,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> Image2D:
    """One chest study with a clinical result (pneumothorax positive, effusion below threshold) and a shadow
    model's result that must stay hidden."""
    image = store_chest_image(orthanc, shared_data, "20250301", patient_id="AI-PANEL")
    clinical = install_model(db, settings, tmp_path / "clinical", Mode.CLINICAL, number=1, vendor=HOSTILE)
    shadow = install_model(
        db, settings, tmp_path / "shadow", Mode.SHADOW, number=2, name="Shadow trial model"
    )
    add_result(db, image, clinical, "urgent", {"Effusion": 0.25, "Pneumothorax": 0.81})
    add_result(db, image, shadow, "urgent", {"Effusion": 0.99, "Pneumothorax": 0.99})
    return image


def _panel(client: TestClient, image: Image2D) -> str:
    response = client.get(f"/studies/{image.study_uid}/ai", headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.text


def _overlays(html: str) -> list[dict[str, object]]:
    found = re.search(r"data-overlays='([^']*)'", html)
    assert found, "the panel carries no overlay data"
    return json.loads(html_module.unescape(found.group(1)))


def test_clinical_result_with_findings_banners_and_overlays(radiologist: TestClient, study: Image2D) -> None:
    html = _panel(radiologist, study)
    assert html.count('data-testid="ai-result"') == 1
    assert "Shadow trial model" not in html
    labels = re.findall(r'data-testid="finding-jump">([^<]+)<', html)
    assert labels == ["Pneumothorax", "Pleural effusion"]  # the positive finding leads
    assert html.count('data-testid="below-threshold"') == 1
    assert "0.25 &lt; 0.4" in html
    assert 'data-testid="trial-banner"' in html and "Research use only" in html
    assert 'data-testid="result-triage">urgent<' in html
    assert 'data-testid="legend"' in html  # a heatmap is shown, so its colour scale is
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html

    overlays = _overlays(html)
    assert {overlay["kind"] for overlay in overlays} == {"heatmap", "box"}
    assert all(overlay["instance_uid"] == study.instance_uid for overlay in overlays)
    heatmap = next(overlay for overlay in overlays if overlay["kind"] == "heatmap")
    assert heatmap["region"] == list(HEATMAP_REGION)
    box = next(overlay for overlay in overlays if overlay["kind"] == "box")
    assert box["rect"] == [20.0, 30.0, 60.0, 70.0] and box["label"] == "Pneumothorax 0.81"


def test_heatmap_is_served_through_the_colour_map(radiologist: TestClient, study: Image2D) -> None:
    overlays = _overlays(_panel(radiologist, study))
    url = next(str(overlay["image_url"]) for overlay in overlays if overlay["kind"] == "heatmap")
    response = radiologist.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(response.content)))
    stored = np.asarray(Image.open(io.BytesIO(heatmap_png())))
    assert shown.shape == (*stored.shape, 4)
    assert np.array_equal(shown, colour_table()[stored])
    assert shown[16, 16, 3] == 255 and shown[0, 0, 3] == 0  # opaque where attention peaks, clear far away


def test_shadow_heatmap_is_not_served(
    radiologist: TestClient, study: Image2D, db: sessionmaker[Session]
) -> None:
    with db() as session:
        ids = session.scalars(select(Finding.id).where(Finding.heatmap_png.is_not(None))).all()
    shown = {str(overlay.get("image_url")) for overlay in _overlays(_panel(radiologist, study))}
    hidden = [finding_id for finding_id in ids if f"/api/ai/findings/{finding_id}/heatmap.png" not in shown]
    assert hidden, "the shadow result should have heatmaps of its own"
    for finding_id in hidden:
        assert radiologist.get(f"/api/ai/findings/{finding_id}/heatmap.png").status_code == 404


def test_model_card_is_one_click_away(radiologist: TestClient, study: Image2D) -> None:
    html = _panel(radiologist, study)
    link = re.search(r'class="model-card-link" href="([^"]+)"', html)
    assert link is not None
    card = radiologist.get(link.group(1))
    assert card.status_code == 200
    assert "Intended use" in card.text and "Triage of frontal adult chest radiographs" in card.text
    assert "research use only" in card.text
    assert radiologist.get("/models/openaim.tiny-1/9.9.9").status_code == 404


def test_each_result_shown_is_audited(
    radiologist: TestClient, study: Image2D, db: sessionmaker[Session]
) -> None:
    _panel(radiologist, study)
    with db() as session:
        shown = session.scalars(select(AuditEvent).where(AuditEvent.event_type == "AIResultShown")).all()
    assert len(shown) == 1
    assert shown[0].object_uid == study.study_uid and shown[0].username == "radiologist"
    assert json.loads(shown[0].detail)["device_uid"] == "1.2.826.0.1.3680043.10.1234.1.0"


def test_blinded_read_hides_the_ai_until_an_impression_and_keeps_it(
    radiologist: TestClient, study: Image2D, db: sessionmaker[Session]
) -> None:
    with transaction(db) as session:
        session.execute(update(User).where(User.username == "radiologist").values(blinded_read=True))
    html = _panel(radiologist, study)
    assert 'data-testid="blinded-notice"' in html and 'data-testid="ai-result"' not in html
    assert _overlays(html) == []
    heatmap_ids = _heatmap_ids(db)
    assert radiologist.get(f"/api/ai/findings/{heatmap_ids[0]}/heatmap.png").status_code == 403

    revealed = radiologist.post(f"/studies/{study.study_uid}/impression", data={"impression": "normal"})
    assert revealed.status_code == 200
    assert 'data-testid="ai-result"' in revealed.text and "before the AI was shown" in revealed.text
    radiologist.post(f"/studies/{study.study_uid}/impression", data={"impression": "abnormal"})
    with db() as session:
        reads = session.scalars(select(StudyRead).order_by(StudyRead.id)).all()
    assert [(read.impression, read.ai_visible) for read in reads] == [("normal", False), ("abnormal", True)]
    with db() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.event_type == "StudyImpression")).all()
    assert [json.loads(event.detail)["ai_visible"] for event in events] == [False, True]


def _heatmap_ids(db: sessionmaker[Session]) -> list[int]:
    with db() as session:
        return list(session.scalars(select(Finding.id).where(Finding.heatmap_png.is_not(None))))


def test_impression_needs_the_csrf_token_and_a_known_value(radiologist: TestClient, study: Image2D) -> None:
    url = f"/studies/{study.study_uid}/impression"
    assert radiologist.post(url, data={"impression": "maybe"}).status_code == 422
    token = radiologist.headers.pop("X-CSRF-Token")
    assert radiologist.post(url, data={"impression": "normal"}).status_code == 403
    radiologist.headers["X-CSRF-Token"] = token


def test_another_vendors_seg_is_shown_with_its_masks_and_audited(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path, db: sessionmaker[Session]
) -> None:
    stored = renumbered(
        [
            shared_data / "dicom" / "foreign_ai" / "highdicom" / "seg_image_cr_binary.dcm",
            *sorted((shared_data / "dicom" / "foreign_ai" / "referenced_cr_16x16").glob("*.dcm")),
        ]
    )
    store(orthanc, stored)
    study_uid = str(stored[0].StudyInstanceUID)
    seg_uid = str(stored[0].SOPInstanceUID)

    html = _panel(radiologist, Image2D(study_uid, "", ""))
    assert html.count('data-testid="ai-result"') == 1
    assert "found in the archive" in html and "Regulatory status unknown" in html
    assert 'data-testid="result-problem"' not in html  # its image is in the archive
    assert 'data-testid="legend"' not in html  # masks only: no heatmap colour scale to explain
    masks = [overlay for overlay in _overlays(html) if overlay["kind"] == "mask"]
    assert masks and all(
        overlay["instance_uid"] in {str(d.SOPInstanceUID) for d in stored[1:]} for overlay in masks
    )
    picture = radiologist.get(str(masks[0]["image_url"]))
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    with db() as session:
        shown = session.scalars(select(AuditEvent).where(AuditEvent.event_type == "AIResultShown")).all()
    assert [json.loads(event.detail)["object_uid"] for event in shown] == [seg_uid]
