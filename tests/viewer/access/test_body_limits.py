"""Request bodies: nothing is read from someone not signed in, and nothing beyond the cap for its kind."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.viewer.conftest import BASE_URL, sign_in
from viewer.app import create_app

MiB = 1024 * 1024
CHUNK = 64 * 1024
STUDY = "1.2.840.99.1"


def _huge_json(size: int) -> bytes:
    """A list of one study UID of ``size`` bytes: cheap to build, ~2x its size in memory once parsed."""
    return b'["' + b"1" * (size - 4) + b'"]'


def test_a_stranger_s_50_mb_body_is_refused_401_before_it_is_read(client: TestClient) -> None:
    body = _huge_json(50 * MiB)
    tracemalloc.start()
    try:
        response = client.post("/api/case-packs", content=body, headers={"Content-Type": "application/json"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 401
    assert response.json() == {"detail": "Sign in first."}
    assert peak < 2 * MiB, f"answering the stranger took {peak / MiB:.1f} MiB"


def test_a_body_over_the_cap_gets_413_saying_the_cap(radiologist: TestClient) -> None:
    response = radiologist.post(
        f"/api/studies/{STUDY}/feedback",
        content=_huge_json(2 * MiB),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is larger than this server accepts here (1 MiB)."}


def test_a_form_over_the_cap_gets_413_even_to_sign_in(client: TestClient) -> None:
    form = b"username=" + b"a" * (2 * MiB)
    response = client.post(
        "/signin", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 413


def test_a_body_under_the_cap_reaches_its_route(radiologist: TestClient) -> None:
    """The route answers (here: the study is not in the archive), as before."""
    response = radiologist.post(f"/api/studies/{STUDY}/feedback", json={"kind": "nonsense"})
    assert response.status_code == 404 and "not in the archive" in response.json()["detail"]


class ChunkedBody:
    """An ASGI receive that sends 64 KiB chunks without end, counting those the app took."""

    def __init__(self) -> None:
        self.taken = 0

    async def __call__(self) -> dict[str, Any]:
        self.taken += 1
        if self.taken > 1000:  # 64 MB: the app never stopped reading
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": b"1" * CHUNK, "more_body": True}


def _send_chunked(client: TestClient, path: str, headers: dict[str, str]) -> tuple[int, int]:
    """POST an endless chunked body to the running app; the answer's status and the chunks it read."""
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "server": ("testserver", 443),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (name.lower().encode(), value.encode())
            for name, value in {**headers, "Cookie": cookie, "Transfer-Encoding": "chunked"}.items()
        ],
    }
    body = ChunkedBody()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    assert client.portal is not None
    client.portal.call(client.app, scope, body, send)
    return sent[0]["status"], body.taken


def test_a_chunked_body_is_cut_off_at_the_cap(radiologist: TestClient) -> None:
    headers = {"Content-Type": "application/json", "X-CSRF-Token": radiologist.headers["X-CSRF-Token"]}
    status, taken = _send_chunked(radiologist, f"/api/studies/{STUDY}/feedback", headers)
    assert status == 413
    assert taken == MiB // CHUNK + 1  # the chunk that passed the cap was the last one read


def test_a_stranger_s_chunked_body_is_not_read_at_all(client: TestClient) -> None:
    status, taken = _send_chunked(client, "/api/case-packs", {"Content-Type": "application/json"})
    assert (status, taken) == (401, 0)


@pytest.fixture
def small_uploads(
    settings: Settings, db: sessionmaker[Session], orthanc: OrthancConnection
) -> Iterator[TestClient]:
    """An admin signed in to a viewer that takes uploads of at most 256 KiB."""
    capped = settings.model_copy(update={"max_upload_bytes": 256 * 1024})
    with TestClient(create_app(capped, orthanc), base_url=BASE_URL) as client:
        yield sign_in(client, "admin")


def test_an_upload_over_its_own_cap_gets_413(small_uploads: TestClient) -> None:
    response = small_uploads.post(
        "/dicomweb/studies", content=b"\0" * (300 * 1024), headers={"Content-Type": "application/dicom"}
    )
    assert response.status_code == 413
    assert "256 KiB" in response.json()["detail"]


def test_an_upload_may_be_larger_than_a_json_body(admin: TestClient) -> None:
    """Uploads have their own cap: 2 MiB of not-DICOM passes the size check and fails the DICOM one."""
    response = admin.post(
        "/dicomweb/studies", content=b"\0" * (2 * MiB), headers={"Content-Type": "application/dicom"}
    )
    assert response.status_code == 400


def test_a_chunked_upload_is_cut_off_at_its_cap(small_uploads: TestClient) -> None:
    headers = {"Content-Type": "application/dicom", "X-CSRF-Token": small_uploads.headers["X-CSRF-Token"]}
    status, taken = _send_chunked(small_uploads, "/dicomweb/studies", headers)
    assert (status, taken) == (413, 256 * 1024 // CHUNK + 1)
