"""Sign-in: argon2 passwords, server-side sessions in secure cookies, CSRF, audit of every attempt."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openaim.audit import AuditEvent, Outcome
from tests.viewer.conftest import PASSWORD, csrf_token, sign_in
from viewer.access.users import User


def _audit_rows(db: sessionmaker[Session]) -> list[AuditEvent]:
    with db() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_pages_redirect_to_sign_in_and_apis_answer_401(client: TestClient) -> None:
    page = client.get("/worklist", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/signin?next=/worklist"
    assert client.get("/dicomweb/studies").status_code == 401


def test_password_is_stored_as_argon2_hash(db: sessionmaker[Session]) -> None:
    with db() as session:
        user = session.scalars(select(User).where(User.username == "radiologist")).one()
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


def test_sign_in_sets_a_secure_http_only_session_cookie(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    token = csrf_token(client.get("/signin").text)
    response = client.post(
        "/signin",
        data={"username": "radiologist", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = next(c for c in response.headers.get_list("set-cookie") if "openaim_session" in c)
    assert cookie.startswith("__Host-openaim_session=")
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=lax" in cookie
    assert client.get("/worklist").status_code == 200
    sign_ins = [row for row in _audit_rows(db) if row.event_type == "UserAuthentication"]
    assert [(row.username, row.outcome) for row in sign_ins] == [("radiologist", Outcome.SUCCESS)]


def test_wrong_password_gets_a_generic_error_and_an_audit_row(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    token = csrf_token(client.get("/signin").text)
    attempts = [("radiologist", "wrong password!"), ("nobody-by-this-name", "wrong password!")]
    messages = []
    for username, password in attempts:
        response = client.post(
            "/signin", data={"username": username, "password": password, "csrf_token": token}
        )
        assert response.status_code == 401
        messages.append(response.text.split('role="alert">')[1].split("<")[0])
    assert messages[0] == messages[1] == "Unknown user name or wrong password."
    failures = [row for row in _audit_rows(db) if row.outcome == Outcome.MINOR_FAILURE]
    assert [row.username for row in failures] == ["radiologist", "nobody-by-this-name"]
    assert all(row.event_type == "UserAuthentication" for row in failures)
    assert client.get("/dicomweb/studies").status_code == 401


def test_sign_in_without_the_forms_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/signin")
    response = client.post("/signin", data={"username": "radiologist", "password": PASSWORD})
    assert response.status_code == 403
    assert client.get("/dicomweb/studies").status_code == 401


def test_state_changing_request_without_csrf_header_is_refused(radiologist: TestClient) -> None:
    token = radiologist.headers.pop("X-CSRF-Token")
    assert radiologist.post("/signout", follow_redirects=False).status_code == 403
    assert radiologist.get("/worklist").status_code == 200  # still signed in
    radiologist.headers["X-CSRF-Token"] = token


def test_sign_out_ends_the_session_on_the_server(client: TestClient) -> None:
    sign_in(client, "radiologist")
    stolen_cookie = dict(client.cookies)
    response = client.post("/signout", follow_redirects=False)
    assert response.status_code == 303
    client.cookies.clear()
    client.cookies.update(stolen_cookie)  # replaying the old cookie must not work
    assert client.get("/dicomweb/studies").status_code == 401


def test_sign_in_never_redirects_to_another_site(client: TestClient) -> None:
    token = csrf_token(client.get("/signin").text)
    response = client.post(
        "/signin",
        data={"username": "radiologist", "password": PASSWORD, "csrf_token": token, "next": "//evil.example"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"
