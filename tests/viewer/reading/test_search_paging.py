"""QIDO-RS paging through the proxy: a limit or offset that is not a whole number is the client's mistake
(400), not an archive error (Orthanc answers 500 to limit=-1, which the proxy passed on as 502)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

SEARCHES = [
    "/dicomweb/studies",
    "/dicomweb/studies/1.2.3/series",
    "/dicomweb/studies/1.2.3/series/1.2.4/instances",
]


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize(
    "query", ["limit=-1", "offset=-5", "limit=abc", "limit=1e3", "offset=%C2%B2", "limit=" + "9" * 12]
)
def test_a_malformed_limit_or_offset_is_400(radiologist: TestClient, search: str, query: str) -> None:
    response = radiologist.get(f"{search}?{query}", headers={"Accept": "application/dicom+json"})
    assert response.status_code == 400, response.text
    assert "whole number" in response.json()["detail"]


def test_a_whole_number_limit_and_offset_reach_orthanc(radiologist: TestClient) -> None:
    response = radiologist.get(
        "/dicomweb/studies?limit=5&offset=0", headers={"Accept": "application/dicom+json"}
    )
    assert response.status_code in (200, 204)
