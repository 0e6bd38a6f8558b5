"""Sign-in through the hospital's OpenID provider, against a real one: the certified ``oidc-provider``
(npm) started by the test (tests/viewer/access/oidc_provider, installed by ``make setup``), its
development login form filled in as a browser would. Roles come from the provider's groups."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openaim.audit import AuditEvent, Outcome
from openaim.db import transaction
from openaim.settings import Settings
from orthanc.launcher import free_port
from viewer.access.users import Role, find_user

from ..conftest import BASE_URL, csrf_token

PROVIDER_DIR = Path(__file__).with_name("oidc_provider")
CLIENT_ID = "openaim"
CLIENT_SECRET = "a client secret for the tests only"
CALLBACK = f"{BASE_URL}/signin/oidc/callback"
ROLE_MAP = {"radiology": "radiologist", "qa-leads": "reviewer", "it-admins": "admin"}


@dataclass
class Provider:
    issuer: str
    config_path: Path

    def set_account(self, login: str, **claims: object) -> None:
        config = json.loads(self.config_path.read_text())
        config["accounts"][login] = claims
        self.config_path.write_text(json.dumps(config))


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[Provider]:
    node = shutil.which("node")
    assert node, "the OIDC tests need Node.js"
    assert (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir(), (
        f"oidc-provider is not installed: run `make setup` (or `npm ci` in {PROVIDER_DIR})"
    )
    port = free_port()
    config = {
        "port": port,
        "client": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": [CALLBACK]},
        "accounts": {},
    }
    config_path = tmp_path / "oidc-provider.json"
    config_path.write_text(json.dumps(config))
    log = (tmp_path / "oidc-provider.log").open("w")
    command = [node, "provider.mjs", str(config_path)]
    process = subprocess.Popen(command, cwd=PROVIDER_DIR, stdout=log, stderr=log)
    issuer = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{issuer}/.well-known/openid-configuration", process)
        yield Provider(issuer, config_path)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the OpenID provider exited"
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the OpenID provider did not start")


@pytest.fixture
def settings(tmp_path: Path, provider: Provider) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'openaim.db'}",
        study_index_follow=False,
        oidc_issuer=provider.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_scopes="openid profile email groups",
        oidc_role_map=ROLE_MAP,
        oidc_display_name="St Elsewhere sign-in",
    )


def _at_provider(start: str, login: str) -> str:
    """Follow the provider's pages as a browser would, filling in its login and consent forms; the
    address it finally sends the browser back to (the viewer's callback)."""
    with httpx.Client(timeout=10) as browser:
        response = browser.get(start)
        for _ in range(20):
            while response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(BASE_URL):
                    return location
                response = browser.get(location)
            form = re.search(r'<form[^>]*action="([^"]+)"[^>]*method="post"', response.text)
            assert form, f"the provider showed no form: {response.status_code} {response.text[:300]}"
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', response.text))
            if 'name="login"' in response.text:
                fields |= {"login": login, "password": "the provider's test form takes any password"}
            response = browser.post(urljoin(str(response.url), unescape(form.group(1))), data=fields)
    raise AssertionError("the provider never sent the browser back")


def _sign_in(viewer: TestClient, login: str, next_url: str = "/worklist") -> httpx.Response:
    start = viewer.get(f"/signin/oidc?next={next_url}", follow_redirects=False)
    assert start.status_code == 303, start.text
    callback = _at_provider(start.headers["location"], login)
    return viewer.get(callback.removeprefix(BASE_URL), follow_redirects=False)


def _events(db: sessionmaker[Session]) -> list[AuditEvent]:
    with db() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_the_sign_in_page_offers_the_provider(client: TestClient) -> None:
    page = client.get("/signin?next=/worklist").text
    assert "Sign in with St Elsewhere sign-in" in page and "/signin/oidc?next=/worklist" in page


def test_first_sign_in_creates_the_account_with_roles_from_the_providers_groups(
    client: TestClient, provider: Provider, db: sessionmaker[Session]
) -> None:
    provider.set_account("u-1001", preferred_username="dr.lee", name="Dr Ada Lee", groups=["radiology"])
    answer = _sign_in(client, "u-1001")
    assert answer.status_code == 303 and answer.headers["location"] == "/worklist"
    page = client.get("/worklist", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "Dr Ada Lee" in page.text
    with db() as session:
        user = find_user(session, "dr.lee")
        assert user is not None
        assert user.roles == {Role.RADIOLOGIST} and user.password_hash is None
        assert user.oidc_subject == f"{provider.issuer} u-1001"
    sign_ins = [row for row in _events(db) if row.event_type == "UserAuthentication"]
    assert [(row.username, row.outcome, json.loads(row.detail)["method"]) for row in sign_ins] == [
        ("dr.lee", Outcome.SUCCESS, "oidc")
    ]
    assert client.get("/admin/users").status_code == 403  # a radiologist, nothing more


def test_roles_follow_the_provider_at_every_sign_in(
    client: TestClient, provider: Provider, db: sessionmaker[Session]
) -> None:
    provider.set_account("u-1002", preferred_username="dr.ng", groups=["radiology"])
    assert _sign_in(client, "u-1002").status_code == 303
    provider.set_account("u-1002", preferred_username="dr.ng", groups=["qa-leads", "it-admins", "canteen"])
    client.cookies.clear()
    assert _sign_in(client, "u-1002").status_code == 303
    assert client.get("/admin/users").status_code == 200
    with db() as session:
        user = find_user(session, "dr.ng")
        assert user is not None and user.roles == {Role.REVIEWER, Role.ADMIN}
    changed = [json.loads(row.detail) for row in _events(db) if row.event_type == "SecurityAlert"]
    assert [(c["before"], c["after"]) for c in changed] == [(["radiologist"], ["admin", "reviewer"])]
    provider.set_account("u-1002", preferred_username="dr.ng", groups=["canteen"])  # left the department
    client.cookies.clear()
    assert _sign_in(client, "u-1002").status_code == 401


def test_a_provider_user_named_like_a_local_account_does_not_get_it(
    client: TestClient, provider: Provider, db: sessionmaker[Session]
) -> None:
    provider.set_account("u-666", preferred_username="admin", groups=["it-admins"])
    answer = _sign_in(client, "u-666")
    assert answer.status_code == 401
    assert "did not succeed" in answer.text
    assert client.get("/admin/users").status_code == 401
    [failure] = [row for row in _events(db) if row.outcome == Outcome.MINOR_FAILURE]
    assert "local account" in json.loads(failure.detail)["reason"]


def test_someone_without_a_mapped_group_is_refused(client: TestClient, provider: Provider) -> None:
    provider.set_account("u-1003", preferred_username="porter", groups=["estates"])
    assert _sign_in(client, "u-1003").status_code == 401
    assert client.get("/worklist").status_code == 401


def test_an_account_disabled_here_stays_disabled(
    client: TestClient, provider: Provider, db: sessionmaker[Session]
) -> None:
    provider.set_account("u-1004", preferred_username="dr.oh", groups=["radiology"])
    assert _sign_in(client, "u-1004").status_code == 303
    with transaction(db) as session:
        user = find_user(session, "dr.oh")
        assert user is not None
        user.active = False
    client.cookies.clear()
    assert _sign_in(client, "u-1004").status_code == 401


def test_a_callback_whose_state_differs_is_refused(client: TestClient, provider: Provider) -> None:
    provider.set_account("u-1005", preferred_username="dr.ho", groups=["radiology"])
    start = client.get("/signin/oidc", follow_redirects=False)
    callback = _at_provider(start.headers["location"], "u-1005")
    query = parse_qs(urlsplit(callback).query)
    forged = f"/signin/oidc/callback?code={query['code'][0]}&state=another-state"
    assert client.get(forged, follow_redirects=False).status_code == 401
    # A sign-in started in someone else's browser (login CSRF): the right state, but not this cookie.
    with TestClient(client.app, base_url=BASE_URL) as victim:
        assert victim.get(callback.removeprefix(BASE_URL), follow_redirects=False).status_code == 401


def test_a_code_is_good_once(client: TestClient, provider: Provider, db: sessionmaker[Session]) -> None:
    provider.set_account("u-1006", preferred_username="dr.tay", groups=["radiology"])
    start = client.get("/signin/oidc", follow_redirects=False)
    callback = _at_provider(start.headers["location"], "u-1006").removeprefix(BASE_URL)
    pending = client.cookies.get("__Host-openaim_oidc")
    assert client.get(callback, follow_redirects=False).status_code == 303
    client.cookies.clear()
    client.cookies.set("__Host-openaim_oidc", pending or "")
    assert client.get(callback, follow_redirects=False).status_code == 401
    [failure] = [row for row in _events(db) if row.outcome == Outcome.MINOR_FAILURE]
    assert "code exchange" in json.loads(failure.detail)["reason"]  # the provider refused it


def test_a_provider_account_has_no_password_to_guess(client: TestClient, provider: Provider) -> None:
    provider.set_account("u-1007", preferred_username="dr.lim", groups=["radiology"])
    assert _sign_in(client, "u-1007").status_code == 303
    client.cookies.clear()
    token = csrf_token(client.get("/signin").text)
    for password in ("", "None", "null"):
        form = {"username": "dr.lim", "password": password, "csrf_token": token}
        answer = client.post("/signin", data=form)
        assert answer.status_code in (401, 422)
    assert client.get("/worklist").status_code == 401
