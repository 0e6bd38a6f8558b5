"""Every whole number a route takes from a URL is bounded, so that none can overflow the database's
64-bit integers (2**63 raised OverflowError, a 500, on the case-pack route)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.viewer.conftest import sign_in
from viewer.row_ids import MAX_ROW_ID

TOO_LARGE = str(2**63)


def _integer_params(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, parameter, its integer schema) for every integer path or query parameter of the app."""
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            for param in operation.get("parameters", []):
                for kind in [param["schema"], *param["schema"].get("anyOf", [])]:
                    if kind.get("type") == "integer":
                        yield path, param["name"], kind


def test_every_integer_in_a_url_has_an_upper_bound_a_database_can_hold(client: TestClient) -> None:
    found = list(_integer_params(client.app.openapi()))  # type: ignore[attr-defined]
    assert len(found) >= 5, "too few integer parameters found: the walk is broken"
    for path, name, kind in found:
        assert kind.get("maximum", MAX_ROW_ID + 1) <= MAX_ROW_ID, f"{path}: {name} has no upper bound"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", f"/review/meetings/{TOO_LARGE}/case-pack"),
        ("get", f"/review/meetings/{TOO_LARGE}"),
        ("get", f"/api/ai/findings/{TOO_LARGE}/heatmap.png"),
    ],
)
def test_an_id_past_64_bits_is_422_not_a_server_error(client: TestClient, method: str, path: str) -> None:
    sign_in(client, "reviewer")
    assert getattr(client, method)(path).status_code == 422


@pytest.mark.parametrize("path", [f"/admin/audit?before={TOO_LARGE}", f"/my/feedback?before={TOO_LARGE}"])
def test_a_page_marker_past_64_bits_is_422(client: TestClient, path: str) -> None:
    sign_in(client, "admin")
    assert client.get(path).status_code == 422
