"""The worklist holds every study: with more studies than a page, the flags, the order and the filters
span all of them, and the page says which ones of how many it shows. Real Orthanc (210 studies of one
patient), real database. The flagged studies are the ten that one 200-study archive query leaves out,
which is all the worklist used to see."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from inference.catalog import Mode
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.ai_fixtures import Image2D, add_result, install_model, store_chest_image
from tests.viewer.study_index_fixtures import index_studies
from viewer.reading.worklist import PAGE_SIZE

HTMX = {"HX-Request": "true"}
STUDIES = 210
DASH = "\N{EN DASH}"  # "1\N{EN DASH}100 of 210 studies"


@dataclass(frozen=True)
class Ward:
    patient: str
    images: list[Image2D]  # oldest first: one a day from 2023-01-01
    priority: list[int]  # positions in images, oldest first
    urgent: int


@pytest.fixture(scope="module")
def stored(orthanc: OrthancConnection, shared_data: Path) -> tuple[str, list[Image2D], list[int]]:
    """210 studies of one patient, one a day, and which ones a 200-study archive query leaves out."""
    patient = f"WL-PAGES-{generate_uid()[-10:]}"
    first = date(2023, 1, 1)
    images = [
        store_chest_image(orthanc, shared_data, (first + timedelta(days=i)).strftime("%Y%m%d"), patient)
        for i in range(STUDIES)
    ]
    with orthanc.client() as client:
        answer = client.get("/dicom-web/studies", params={"PatientID": patient, "limit": "200"}).json()
    returned = {item["0020000D"]["Value"][0] for item in answer}
    left_out = [i for i, image in enumerate(images) if image.study_uid not in returned]
    assert len(left_out) == STUDIES - 200
    return patient, images, left_out


@pytest.fixture
def ward(
    stored: tuple[str, list[Image2D], list[int]],
    orthanc: OrthancConnection,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> Ward:
    """The studies indexed; of those the archive query leaves out, one urgent and nine priority."""
    patient, images, left_out = stored
    index_studies(orthanc, db, *(image.study_uid for image in images))
    version = install_model(db, settings, tmp_path / "clinical", Mode.CLINICAL)
    urgent, priority = left_out[0], left_out[1:]
    for i in priority:
        add_result(db, images[i], version, "priority", {"Effusion": 0.9, "Pneumothorax": 0.1})
    add_result(db, images[urgent], version, "urgent", {"Effusion": 0.2, "Pneumothorax": 0.9})
    return Ward(patient, images, priority, urgent)


def _page(client: TestClient, **params: str) -> tuple[list[str], str]:
    """The study UIDs of one page, in order, and its "N of M" line."""
    html = client.get("/worklist", params=params, headers=HTMX).text
    uids = re.findall(r'<tr class="worklist-row[^"]*" data-study-uid="([^"]+)"', html)
    count = re.search(r'data-testid="worklist-count">([^<]*)<', html)
    assert count is not None, "the page does not say how many studies match"
    return uids, count.group(1)


def test_flagged_studies_beyond_the_first_200_appear_under_the_flag_filter(
    radiologist: TestClient, ward: Ward
) -> None:
    priority, count = _page(radiologist, q=ward.patient, flag="priority")
    assert priority == [ward.images[i].study_uid for i in ward.priority]
    assert count == f"1{DASH}9 of 9 studies"
    assert _page(radiologist, q=ward.patient, flag="urgent")[0] == [ward.images[ward.urgent].study_uid]


def test_pages_say_which_studies_of_how_many_and_cover_each_once(radiologist: TestClient, ward: Ward) -> None:
    patient, images = ward.patient, ward.images
    seen: list[str] = []
    for number in (1, 2, 3):
        uids, count = _page(radiologist, q=patient, page=str(number))
        start = (number - 1) * PAGE_SIZE
        assert count == f"{start + 1}{DASH}{start + len(uids)} of {STUDIES} studies"
        seen += uids
    assert len(seen) == STUDIES and set(seen) == {image.study_uid for image in images}
    assert _page(radiologist, q=patient, page="99")[0] == seen[2 * PAGE_SIZE :]  # past the end: the last
    full = radiologist.get("/worklist", params={"q": patient, "page": "2"}).text
    assert 'data-testid="previous-page"' in full and 'data-testid="next-page"' in full
    assert f'href="?q={patient}&amp;page=3"' in full  # the next page keeps the filters


def test_urgent_first_then_oldest_first_across_every_page(radiologist: TestClient, ward: Ward) -> None:
    pages = [_page(radiologist, q=ward.patient, page=str(number))[0] for number in (1, 2, 3)]
    images = ward.images
    flagged = [images[ward.urgent].study_uid] + [images[i].study_uid for i in ward.priority]
    rest = [image.study_uid for i, image in enumerate(images) if i not in ward.priority and i != ward.urgent]
    assert [uid for page in pages for uid in page] == flagged + rest
    assert pages[0][0] == images[ward.urgent].study_uid
