"""Who may call what: every route of the app, read from the app itself, called signed out and as each role,
against the table below. Signed out is 401 (303 to the sign-in page for a browser); a role the table does
not name is 403; a role it names gets anything but 401 and 403 (a 404 or 422 for the harmless parameters
used here is fine: it was let in). A route missing from the table fails, naming it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from tests.viewer.app_routes import Route, app_routes
from tests.viewer.conftest import sign_in
from viewer.access.users import Role

R, V, G, A = Role.RADIOLOGIST, Role.REVIEWER, Role.GOVERNANCE, Role.ADMIN
ANY = frozenset(Role)
READ = frozenset({R, V, A})  # the reading room: images, AI results, feedback
REVIEW = frozenset({V, A})  # discrepancy review meetings and their exports
MONITOR = frozenset({G, A})  # what the models are and what was done: Models page, audit log
CARDS = frozenset(
    {R, V, G, A}
)  # a model card: readers open it from a result, governance from the Models page
ADMIN = frozenset({A})
PUBLIC = None  # no sign-in: the sign-in form, health, static files
INSTANCE = "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}"

ALLOWED: dict[Route, frozenset[Role] | None] = {
    ("GET", "/signin"): PUBLIC,
    ("POST", "/signin"): PUBLIC,
    ("POST", "/signout"): PUBLIC,
    ("GET", "/signin/oidc"): PUBLIC,  # off to the hospital's identity provider
    ("GET", "/signin/oidc/callback"): PUBLIC,  # and back, before there is any session
    ("GET", "/healthz"): PUBLIC,
    ("*", "/static"): PUBLIC,
    ("*", "/vendor/htmx"): PUBLIC,
    ("GET", "/"): ANY,
    ("GET", "/account/password"): ANY,
    ("POST", "/account/password"): ANY,
    ("GET", "/worklist"): READ,
    ("GET", "/studies/{study_uid}"): READ,
    ("POST", "/api/studies/{study_uid}/done"): READ,
    ("GET", "/dicomweb/studies"): READ,
    ("POST", "/dicomweb/studies"): ADMIN,
    ("GET", "/dicomweb/studies/{study_uid}/series"): READ,
    ("GET", "/dicomweb/studies/{study_uid}/metadata"): READ,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances"): READ,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/metadata"): READ,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}"): READ,
    (
        "GET",
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/frames/{frames}",
    ): READ,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/rendered"): READ,
    ("GET", "/admin/models"): MONITOR,
    ("GET", "/models/{model_id}/{version}"): CARDS,
    ("POST", "/admin/models/{model_id}/mode"): ADMIN,
    ("POST", "/admin/models/{model_id}/retire"): ADMIN,
    ("GET", "/api/studies/{study_uid}/series/{series_uid}/images"): READ,
    ("GET", "/api/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/thumbnail.png"): READ,
    ("GET", "/api/studies/{study_uid}/series/{series_uid}/overlay-planes"): READ,
    (
        "GET",
        "/api/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/overlays/{group}/{frame}.png",
    ): READ,
    ("GET", "/studies/{study_uid}/ai"): READ,
    ("POST", "/studies/{study_uid}/impression"): READ,
    ("GET", "/api/ai/findings/{finding_id}/heatmap.png"): READ,
    ("GET", "/api/ai/legend.png"): READ,
    ("GET", "/api/studies/{study_uid}/foreign/{series_uid}/{instance_uid}/masks/{frame}.png"): READ,
    ("POST", "/api/studies/{study_uid}/feedback"): READ,
    ("GET", "/api/studies/{study_uid}/feedback"): READ,
    ("POST", "/api/studies/{study_uid}/feedback/sr"): READ,
    ("GET", "/my/feedback"): READ,
    ("GET", "/review"): REVIEW,
    ("GET", "/review/meetings"): REVIEW,
    ("POST", "/review/meetings"): REVIEW,
    ("GET", "/review/meetings/{meeting_id}"): REVIEW,
    ("GET", "/review/meetings/{meeting_id}/minutes.pdf"): REVIEW,
    ("GET", "/review/meetings/{meeting_id}/minutes.csv"): REVIEW,
    ("GET", "/review/meetings/{meeting_id}/cases/{number}"): REVIEW,
    ("GET", "/review/meetings/{meeting_id}/cases/{number}/images/{index}"): REVIEW,
    ("POST", "/review/meetings/{meeting_id}/cases/{number}/decision"): REVIEW,
    ("POST", "/review/meetings/{meeting_id}/end"): REVIEW,
    ("POST", "/review/meetings/{meeting_id}/case-pack"): REVIEW,
    ("POST", "/api/case-packs"): REVIEW,
    ("GET", "/admin/users"): ADMIN,
    ("POST", "/admin/users"): ADMIN,
    ("GET", "/admin/users/{username}"): ADMIN,
    ("POST", "/admin/users/{username}/disable"): ADMIN,
    ("POST", "/admin/users/{username}/enable"): ADMIN,
    ("POST", "/admin/users/{username}/roles"): ADMIN,
    ("POST", "/admin/users/{username}/password"): ADMIN,
    ("GET", "/admin/audit"): MONITOR,
    ("GET", "/admin/audit/verification"): MONITOR,
    ("GET", "/admin/audit.csv"): MONITOR,
}

# Harmless values for each path parameter: well formed, naming nothing the archive or database holds.
PARAMETERS = {
    "study_uid": generate_uid(),
    "series_uid": generate_uid(),
    "instance_uid": generate_uid(),
    "frames": "1",
    "frame": "1",
    "group": "6000",
    "finding_id": "999999",
    "model_id": "openaim.not-installed",
    "version": "0.0.1",
    "meeting_id": "999999",
    "number": "1",
    "index": "1",
    "username": "nobody-by-this-name",
}


@pytest.fixture
def routes(client: TestClient) -> dict[Route, object]:
    return app_routes(client.app)  # type: ignore[arg-type]


def test_every_route_is_in_the_table(routes: dict[Route, object]) -> None:
    missing = sorted(set(routes) - ALLOWED.keys())
    assert not missing, f"routes missing from ALLOWED (say which roles may call them): {missing}"
    assert not sorted(ALLOWED.keys() - set(routes)), "ALLOWED names routes the app no longer has"


def _url(path: str) -> str:
    try:
        return path.format(**PARAMETERS)
    except KeyError as error:
        raise AssertionError(f"{path}: add a harmless value for {error} to PARAMETERS") from error


def _call(client: TestClient, method: str, path: str, accept: str = "application/json") -> int:
    url = _url(path) if method != "*" else f"{path}/not-a-file"
    headers = {"Accept": accept}
    if method == "POST":  # the session's CSRF token (sign_in sets it) and an empty body
        return client.post(url, headers=headers, content=b"", follow_redirects=False).status_code
    return client.get(url, headers=headers, follow_redirects=False).status_code


def test_signed_out_is_told_to_sign_in(client: TestClient, routes: dict[Route, object]) -> None:
    for (method, path), roles in ALLOWED.items():
        if roles is PUBLIC:
            if method in ("GET", "*"):
                assert _call(client, method, path) not in (401, 403), path
            continue
        assert _call(client, method, path) == 401, (method, path)
        if method == "GET":
            response = client.get(_url(path), headers={"Accept": "text/html"}, follow_redirects=False)
            assert response.status_code == 303 and response.headers["location"].startswith("/signin"), path


@pytest.mark.parametrize("role", list(Role), ids=str)
def test_each_role_may_do_what_the_table_says_and_nothing_else(
    client: TestClient, routes: dict[Route, object], role: Role
) -> None:
    signed_in = sign_in(client, role.value)
    wrong = []
    for (method, path), roles in ALLOWED.items():
        if roles is PUBLIC:
            continue  # the sign-in form, sign-out (it would end this session), health, static files
        status = _call(signed_in, method, path)
        allowed = role in roles
        if (allowed and status in (401, 403)) or (not allowed and status != 403):
            wrong.append(f"{method} {path}: {status} ({'allowed' if allowed else 'not allowed'})")
    assert not wrong, f"{role.value}: " + "; ".join(wrong)
