"""A running viewer app (real database, real Orthanc) and signed-in clients for each role."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.settings import Settings
from orthanc import OrthancConnection
from viewer.access.users import Role, add_user
from viewer.app import create_app

PASSWORD = "correct horse battery staple"
BASE_URL = "https://testserver"  # HTTPS, so that the Secure cookies are sent back

SignIn = Callable[..., TestClient]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The tests index the studies they arrange themselves (tests/viewer/study_index_fixtures.py): a
    # follower would first index every study that the session's Orthanc holds, for each test.
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'openaim.db'}",
        study_index_follow=False,
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[sessionmaker[Session]]:
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    factory = session_factory(engine, settings.resolved_audit_key)  # the app's key: the same trail
    with transaction(factory) as session:
        for role in Role:
            add_user(session, role.value, PASSWORD, {role})
    yield factory
    engine.dispose()


@pytest.fixture
def client(settings: Settings, db: sessionmaker[Session], orthanc: OrthancConnection) -> Iterator[TestClient]:
    with TestClient(create_app(settings, orthanc), base_url=BASE_URL) as test_client:
        yield test_client


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    client.headers.pop("X-CSRF-Token", None)  # a previous session's token
    token = csrf_token(client.get("/signin").text)
    response = client.post(
        "/signin",
        data={"username": username, "password": password, "csrf_token": token, "next": "/worklist"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    page = client.get("/worklist", headers={"Accept": "text/html"})  # any page carries the token
    client.headers["X-CSRF-Token"] = csrf_token(page.text)
    return client


@pytest.fixture
def radiologist(client: TestClient) -> TestClient:
    return sign_in(client, "radiologist")


@pytest.fixture
def admin(client: TestClient) -> TestClient:
    return sign_in(client, "admin")
