"""A session unused for ``session_idle_minutes`` ends; using it keeps it, a page polling by itself does
not, and noting use costs no database write per request."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openaim.settings import Settings
from viewer.access.sessions import POLL_HEADER, UserSession

from ..conftest import sign_in

IDLE_S = 2.0
API = "/dicomweb/studies"
UID = "1.2.826.0.1.3680043.8.498.1"
# A pixel route (the session memo's path): a signed-in reader gets 404 from the archive, anyone else 401.
FRAME = f"/dicomweb/studies/{UID}/series/{UID}.2/instances/{UID}.3/frames/1"
FRAME_ACCEPT = {"Accept": 'multipart/related; type="application/octet-stream"'}


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    idle_minutes = getattr(request, "param", IDLE_S / 60)
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'openaim.db'}",
        study_index_follow=False,
        session_idle_minutes=idle_minutes,
        session_recheck_s=0.5,
    )


def _last_seen(db: sessionmaker[Session]) -> list[datetime]:
    with db() as session:
        return list(session.scalars(select(UserSession.last_seen_at)))


def test_a_session_unused_for_the_idle_time_ends(client: TestClient) -> None:
    reader = sign_in(client, "radiologist")
    assert reader.get(API).status_code == 200
    time.sleep(IDLE_S + 0.3)
    assert reader.get(API).status_code == 401
    page = reader.get("/worklist", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/signin")
    assert reader.get(FRAME, headers=FRAME_ACCEPT).status_code == 401


def test_a_session_in_use_outlives_the_idle_time(client: TestClient) -> None:
    reader = sign_in(client, "radiologist")
    started = time.monotonic()
    while time.monotonic() - started < 2.5 * IDLE_S:
        assert reader.get(API).status_code == 200
        time.sleep(IDLE_S / 4)
    assert reader.get(API).status_code == 200


def test_viewing_images_is_use(client: TestClient) -> None:
    reader = sign_in(client, "radiologist")
    started = time.monotonic()
    while time.monotonic() - started < 2.5 * IDLE_S:
        assert reader.get(FRAME, headers=FRAME_ACCEPT).status_code == 404
        time.sleep(IDLE_S / 4)
    assert reader.get(API).status_code == 200


def test_a_page_polling_by_itself_does_not_keep_the_session(client: TestClient) -> None:
    reader = sign_in(client, "radiologist")
    poll = {POLL_HEADER: "1", "HX-Request": "true"}
    started = time.monotonic()
    while time.monotonic() - started < IDLE_S - 0.3:  # the worklist's refresh, as htmx sends it
        assert reader.get("/worklist", headers=poll).status_code == 200
        time.sleep(IDLE_S / 4)
    time.sleep(0.6)
    assert reader.get("/worklist", headers=poll).status_code == 401


@pytest.mark.parametrize("settings", [30.0], indirect=True)
def test_use_is_written_at_most_once_a_minute_not_per_request(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    reader = sign_in(client, "radiologist")
    [after_sign_in] = _last_seen(db)
    for _ in range(20):
        assert reader.get(API).status_code == 200
        assert reader.get(FRAME, headers=FRAME_ACCEPT).status_code == 404
    assert _last_seen(db) == [after_sign_in]


def test_the_worklist_and_ai_panel_polls_say_they_are_polls() -> None:
    templates = Path(__file__).resolve().parents[3] / "frontend" / "templates"
    for name in ("reading/worklist.html", "feedback/ai_panel.html"):
        lines = (templates / name).read_text().splitlines()
        polling = [line for line in lines if 'hx-trigger="every' in line]
        assert polling and all(POLL_HEADER in line for line in polling), name
