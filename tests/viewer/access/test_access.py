"""Every page and API needs a signed-in user: checked route by route, so a new route cannot forget."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

# The only routes a visitor may reach before signing in. Adding one here is a security decision.
PUBLIC_PATHS = frozenset({"/signin", "/signout", "/healthz", "/signin/oidc", "/signin/oidc/callback"})


def _example_path(path: str) -> str:
    return re.sub(r"\{frames\}", "1", re.sub(r"\{[a-z_]+\}", "1.2.840.1", path))


def test_every_route_but_sign_in_refuses_anonymous_requests(client: TestClient) -> None:
    routes = [
        (method.upper(), path)
        for path, operations in client.app.openapi()["paths"].items()
        if path not in PUBLIC_PATHS
        for method in operations
    ]
    assert len(routes) >= 10
    for method, path in routes:
        response = client.request(method, _example_path(path), follow_redirects=False)
        assert response.status_code == 401, f"{method} {path} answered {response.status_code}"


def test_the_api_schema_is_not_published_to_anonymous_users(client: TestClient) -> None:
    assert client.get("/openapi.json").status_code in (401, 404)
    assert client.get("/docs").status_code in (401, 404)


def test_responses_carry_a_strict_content_security_policy(client: TestClient) -> None:
    response = client.get("/signin")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in response.text  # no inline script anywhere in the page
