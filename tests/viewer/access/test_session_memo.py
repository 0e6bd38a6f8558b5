"""The pixel routes trust a session the database found live a moment ago, and no longer than that."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from openaim.db import make_engine, session_factory, transaction, upgrade, utcnow
from openaim.settings import Settings
from orthanc import OrthancConnection
from viewer.access.session_memo import SessionMemo, SignedIn
from viewer.access.sessions import UserSession
from viewer.access.users import Role, add_user
from viewer.app import create_app

from ..conftest import BASE_URL, PASSWORD, sign_in

UID = "1.2.826.0.1.3680043.8.498.1"
# A frame the archive does not hold: a signed-in reader gets 404 from the archive, anyone else 401.
FRAME = f"/dicomweb/studies/{UID}/series/{UID}.2/instances/{UID}.3/frames/1"
FRAME_ACCEPT = {"Accept": 'multipart/related; type="application/octet-stream"'}


def signed_in(expires_in: timedelta = timedelta(hours=1)) -> SignedIn:
    return SignedIn(1, "r", "R", frozenset({Role.RADIOLOGIST}), False, utcnow() + expires_in, "csrf")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_session_is_trusted_for_the_recheck_time_and_no_longer() -> None:
    clock = Clock()
    memo = SessionMemo(5, clock)
    memo.put("token", signed_in())
    clock.now = 4.9
    assert memo.get("token") is not None
    clock.now = 5.1
    assert memo.get("token") is None


def test_a_session_past_its_expiry_is_not_trusted_within_the_recheck_time() -> None:
    memo = SessionMemo(5, Clock())
    memo.put("token", signed_in(expires_in=timedelta(seconds=-1)))
    assert memo.get("token") is None


def test_a_recheck_time_of_zero_keeps_nothing() -> None:
    memo = SessionMemo(0, Clock())
    memo.put("token", signed_in())
    assert memo.get("token") is None


def test_forgetting_ends_the_trust_at_once() -> None:
    memo = SessionMemo(5, Clock())
    memo.put("a", signed_in())
    memo.put("b", signed_in())
    memo.forget("a")
    assert memo.get("a") is None and memo.get("b") is not None
    memo.forget_all()
    assert memo.get("b") is None


def test_signing_out_ends_pixel_access_at_once(radiologist: TestClient) -> None:
    assert radiologist.get(FRAME, headers=FRAME_ACCEPT).status_code == 404  # signed in: the memo has it
    # whoever copied the cookie keeps it after the sign-out
    stolen = "; ".join(f"{name}={value}" for name, value in radiologist.cookies.items())
    radiologist.post("/signout", follow_redirects=False)
    answer = radiologist.get(FRAME, headers=FRAME_ACCEPT | {"Cookie": stolen})
    assert answer.status_code == 401


def test_disabling_a_user_ends_their_pixel_access_at_once(client: TestClient, admin: TestClient) -> None:
    with TestClient(client.app, base_url=BASE_URL) as reader:
        sign_in(reader, "radiologist")
        assert reader.get(FRAME, headers=FRAME_ACCEPT).status_code == 404
        answer = admin.post("/admin/users/radiologist/disable", follow_redirects=False)
        assert answer.status_code == 200, answer.text
        assert reader.get(FRAME, headers=FRAME_ACCEPT).status_code == 401


@pytest.fixture
def recheck_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'openaim.db'}",
        study_index_follow=False,
        session_recheck_s=0.5,
    )


def test_a_session_ended_by_another_process_reads_pixels_for_at_most_the_recheck_time(
    recheck_settings: Settings, orthanc: OrthancConnection
) -> None:
    factory = _users(recheck_settings)
    with TestClient(create_app(recheck_settings, orthanc), base_url=BASE_URL) as reader:
        sign_in(reader, "radiologist")
        assert reader.get(FRAME, headers=FRAME_ACCEPT).status_code == 404
        with transaction(factory) as db:  # `openaim user disable` in another process ends the sessions
            db.execute(delete(UserSession))
        # Pages ask the database every time.
        page = reader.get("/worklist", headers={"Accept": "text/html"}, follow_redirects=False)
        assert page.status_code == 303
        # Pixels: from the memo until the recheck time has passed.
        assert reader.get(FRAME, headers=FRAME_ACCEPT).status_code == 404
        time.sleep(0.6)
        assert reader.get(FRAME, headers=FRAME_ACCEPT).status_code == 401


def test_a_request_that_changes_something_always_asks_the_database(radiologist: TestClient) -> None:
    assert radiologist.get(FRAME, headers=FRAME_ACCEPT).status_code == 404
    app_db = radiologist.app.state.db  # type: ignore[attr-defined]
    with transaction(app_db) as db:
        db.execute(delete(UserSession))
    assert radiologist.post(f"/api/studies/{UID}/done").status_code == 401
    # ... and what it learnt ends the memo's trust too
    assert radiologist.get(FRAME, headers=FRAME_ACCEPT).status_code == 401


def _users(settings: Settings) -> sessionmaker[Session]:
    upgrade(settings.resolved_database_url)
    factory = session_factory(make_engine(settings.resolved_database_url))
    with transaction(factory) as db:
        add_user(db, "radiologist", PASSWORD, {Role.RADIOLOGIST})
    return factory
