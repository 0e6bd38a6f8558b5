"""The admin's user pages against the real app and database: list, add (the new user must change the
password at first sign-in), disable and enable, reset a password, change roles; the last admin stays;
every change and refusal is audited with who did what to whom, never a password; non-admins get 403."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openaim.audit import AuditEvent, Outcome
from tests.viewer.conftest import BASE_URL, csrf_token, sign_in
from viewer.access.users import Role, find_user

HTML = {"Accept": "text/html"}
NEW_PASSWORD = "a password of my own choosing"


def _security_events(db: sessionmaker[Session]) -> list[AuditEvent]:
    with db() as session:
        query = select(AuditEvent).where(AuditEvent.event_type == "SecurityAlert").order_by(AuditEvent.id)
        return list(session.scalars(query))


def _temporary_password(html: str) -> str:
    found = re.search(r'data-testid="temporary-password">([^<]+)<', html)
    assert found, "the answer shows no temporary password"
    return found.group(1)


def _add(admin: TestClient, username: str, *roles: str, password: str = "") -> str:
    response = admin.post(
        "/admin/users",
        data={
            "username": username,
            "display_name": f"Dr {username}",
            "roles": list(roles),
            "password": password,
        },
    )
    assert response.status_code == 200, response.text
    return response.text


def test_admin_lists_users_with_roles_and_status(admin: TestClient) -> None:
    page = admin.get("/admin/users", headers=HTML)
    assert page.status_code == 200
    for role in Role:
        assert f'data-username="{role.value}"' in page.text
    assert (
        '<a href="/admin/users">Users</a>' in page.text
        and '<a href="/admin/audit">Audit log</a>' in page.text
    )


GOVERNANCE_READS = {
    ("GET", "/admin/models"),
    ("GET", "/admin/audit"),
    ("GET", "/admin/audit/verification"),
    ("GET", "/admin/audit.csv"),
}


@pytest.mark.parametrize("role", ["radiologist", "reviewer", "governance"])
def test_every_admin_page_and_action_refuses_other_roles(client: TestClient, role: str) -> None:
    user = sign_in(client, role)
    admin_routes = [
        (method.upper(), re.sub(r"\{[a-z_]+\}", "admin", path))
        for path, operations in client.app.openapi()["paths"].items()
        if path.startswith("/admin/")
        for method in operations
    ]
    assert len([path for _, path in admin_routes if path.startswith(("/admin/users", "/admin/audit"))]) == 10
    for method, path in admin_routes:
        if role == "governance" and (method, path) in GOVERNANCE_READS:
            continue  # read-only for governance (tests/viewer/access/test_authorisation_matrix.py)
        response = user.request(method, path, data={"roles": ["radiologist"]})
        assert response.status_code == 403, f"{role}: {method} {path} answered {response.status_code}"
    assert "/admin/users" not in user.get("/worklist", headers=HTML).text  # not in the navigation


def test_a_new_user_signs_in_with_the_shown_password_and_must_change_it(
    admin: TestClient, db: sessionmaker[Session], client: TestClient
) -> None:
    page = _add(admin, "newbie", "radiologist", "reviewer")
    temporary = _temporary_password(page)
    assert "newbie: added." in page and 'data-username="newbie"' in page
    assert admin.get("/admin/users", headers=HTML).text.count(temporary) == 0  # shown once

    client.headers.pop("X-CSRF-Token")  # the same client now signs in afresh, as the newcomer
    client.cookies.clear()
    sign_in_page = client.get("/signin")
    response = client.post(
        "/signin",
        data={
            "username": "newbie",
            "password": temporary,
            "csrf_token": csrf_token(sign_in_page.text),
            "next": "/worklist",
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == "/account/password?next=/worklist"
    worklist = client.get("/worklist", headers=HTML, follow_redirects=False)
    assert worklist.status_code == 303 and worklist.headers["location"] == "/account/password?next=/worklist"
    assert client.get("/dicomweb/studies").status_code == 403
    form = client.get("/account/password?next=/worklist", headers=HTML)
    assert 'data-testid="must-change"' in form.text and "/admin/users" not in form.text
    token = csrf_token(form.text)
    same = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current_password": temporary,
            "new_password": temporary,
            "repeat_password": temporary,
        },
    )
    assert same.status_code == 400 and "other than the current one" in same.text
    wrong = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current_password": "not the password at all",
            "new_password": NEW_PASSWORD,
            "repeat_password": NEW_PASSWORD,
        },
    )
    assert wrong.status_code == 400 and "current password is wrong" in wrong.text
    changed = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current_password": temporary,
            "new_password": NEW_PASSWORD,
            "repeat_password": NEW_PASSWORD,
            "next": "/worklist",
        },
        follow_redirects=False,
    )
    assert changed.status_code == 303 and changed.headers["location"] == "/worklist"
    assert client.get("/worklist", headers=HTML).status_code == 200
    with db() as session:
        newbie = find_user(session, "newbie")
        assert newbie is not None and not newbie.must_change_password
        assert newbie.roles == {Role.RADIOLOGIST, Role.REVIEWER}

    added, password_changed = _security_events(db)[-2:]
    assert added.username == "admin" and added.action == "C"
    assert json.loads(added.detail)["target"] == "newbie"
    assert json.loads(password_changed.detail)["change"] == "password changed"
    for event in _security_events(db):
        assert temporary not in event.detail and NEW_PASSWORD not in event.detail


def test_adding_a_taken_name_or_a_short_password_is_refused_and_audited(
    admin: TestClient, db: sessionmaker[Session]
) -> None:
    taken = admin.post("/admin/users", data={"username": "radiologist", "roles": ["radiologist"]})
    assert taken.status_code == 409 and "already exists" in taken.text
    short = admin.post(
        "/admin/users", data={"username": "shorty", "roles": ["radiologist"], "password": "short"}
    )
    assert short.status_code == 400 and "at least 12 characters" in short.text
    hostile = admin.post("/admin/users", data={"username": "<b>x</b>", "roles": ["radiologist"]})
    assert hostile.status_code == 400 and "<b>x</b>" not in hostile.text
    refusals = [e for e in _security_events(db) if e.outcome == Outcome.MINOR_FAILURE]
    assert [json.loads(e.detail)["target"] for e in refusals] == ["radiologist", "shorty", "<b>x</b>"]
    assert all('short"' not in e.detail for e in refusals)  # the refused password is not recorded


def test_disabling_signs_the_user_out_at_once_and_enabling_lets_them_back(
    admin: TestClient, client: TestClient, db: sessionmaker[Session]
) -> None:
    with TestClient(client.app, base_url=BASE_URL) as other:
        reader = sign_in(other, "radiologist")
        assert reader.get("/worklist", headers=HTML).status_code == 200
        page = admin.post("/admin/users/radiologist/disable")
        assert page.status_code == 200 and "radiologist: disabled." in page.text
        assert reader.get("/dicomweb/studies").status_code == 401
        assert admin.post("/admin/users/radiologist/enable").status_code == 200
        sign_in(other, "radiologist")
        assert other.get("/worklist", headers=HTML).status_code == 200
    changes = [json.loads(e.detail)["change"] for e in _security_events(db)]
    assert changes == ["disabled", "enabled"]


def test_the_last_admin_cannot_disable_or_demote_themselves(
    admin: TestClient, db: sessionmaker[Session]
) -> None:
    disable = admin.post("/admin/users/admin/disable")
    assert disable.status_code == 409 and "last active admin" in disable.text
    demote = admin.post("/admin/users/admin/roles", data={"roles": ["radiologist"]})
    assert demote.status_code == 409 and "last active admin" in demote.text
    assert admin.get("/admin/users", headers=HTML).status_code == 200  # still an active admin
    assert (
        admin.post("/admin/users/governance/roles", data={"roles": ["governance", "admin"]}).status_code
        == 200
    )
    assert admin.post("/admin/users/admin/roles", data={"roles": ["radiologist"]}).status_code == 200
    assert admin.get("/admin/users", headers=HTML).status_code == 403  # the change applies at once
    events = _security_events(db)
    assert [(e.username, e.outcome) for e in events] == [
        ("admin", Outcome.MINOR_FAILURE),
        ("admin", Outcome.MINOR_FAILURE),
        ("admin", Outcome.SUCCESS),
        ("admin", Outcome.SUCCESS),
    ]
    assert json.loads(events[-1].detail)["roles_after"] == ["radiologist"]
    with db() as session:
        user = find_user(session, "admin")
        assert user is not None and user.active


def test_a_reset_password_is_shown_once_and_ends_the_users_sessions(
    admin: TestClient, client: TestClient, db: sessionmaker[Session]
) -> None:
    with TestClient(client.app, base_url=BASE_URL) as other:
        reader = sign_in(other, "reviewer")
        page = admin.post("/admin/users/reviewer/password", data={"password": ""})
        assert page.status_code == 200 and "reviewer: password reset." in page.text
        temporary = _temporary_password(page.text)
        assert reader.get("/dicomweb/studies").status_code == 401
        assert "must change password" in admin.get("/admin/users/reviewer", headers=HTML).text
        typed = admin.post("/admin/users/reviewer/password", data={"password": "typed by the admin"})
        assert "typed by the admin" not in typed.text and "The password you typed is set" in typed.text
    with db() as session:
        user = find_user(session, "reviewer")
        assert user is not None and user.must_change_password
    assert all(
        temporary not in e.detail and "typed by the admin" not in e.detail for e in _security_events(db)
    )


def test_unknown_users_are_404(admin: TestClient, db: sessionmaker[Session]) -> None:
    assert admin.get("/admin/users/nobody", headers=HTML).status_code == 404
    assert admin.post("/admin/users/nobody/disable").status_code == 404
    # The refusal is kept although the request failed (its transaction rolled back), and says so.
    [refusal] = [event for event in _security_events(db) if event.outcome == Outcome.MINOR_FAILURE]
    assert json.loads(refusal.detail)["request_failed"] == "HTTP 404"
