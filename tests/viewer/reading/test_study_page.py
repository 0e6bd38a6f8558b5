"""The study page names SR and SEG (AI results and the readers' feedback, ours or another vendor's) as AI
results: never as images, never as "not an image" tiles, never among the study's modalities."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import store_chest_image, store_result_object
from viewer.reading.study import SeriesRow, image_modalities


def _row(modality: str) -> SeriesRow:
    return SeriesRow("1.2", modality, "1", "", "1", "")


def test_the_modalities_are_those_of_the_images() -> None:
    rows = [_row("SR"), _row("CT"), _row("SEG"), _row("CT"), _row("MR")]
    assert image_modalities(rows, "CT/MR/SEG/SR") == "CT/MR"
    assert image_modalities([_row("SR")], "SR/SEG/KO") == "KO"  # no images: what the archive says, less ours


def test_sr_and_seg_are_listed_as_ai_results_not_as_images(
    radiologist: TestClient, orthanc: OrthancConnection, shared_data: Path
) -> None:
    image = store_chest_image(orthanc, shared_data, "20250603", patient_id="STUDY-PAGE-AI")
    store_result_object(orthanc, image, "SR", "AI results: <b>vendor</b>")
    store_result_object(orthanc, image, "SEG", "AI heatmaps: vendor")
    page = radiologist.get(f"/studies/{image.study_uid}")
    assert page.status_code == 200
    html = page.text
    facts = re.search(r'<p data-testid="study-facts">(.*?)</p>', html)
    assert facts and facts.group(1) == "2025-06-03 · DX", facts
    assert "not an image" not in html
    assert html.count('class="series-thumb') == 1  # the DX image's tile alone
    listed = re.search(r'<ul class="series-ai" data-testid="ai-series">(.*?)</ul>', html, re.S)
    assert listed, html
    assert "AI results: &lt;b&gt;vendor&lt;/b&gt;" in listed.group(1)
    assert "AI heatmaps: vendor" in listed.group(1)
