"""/healthz, the one public probe: ok for an external Orthanc; 503 with the reason while the child Orthanc
is being restarted (every page that needs images would fail), so that a load balancer or a person sees it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from openaim.settings import Settings
from orthanc import OrthancConnection
from orthanc.supervisor import ArchiveHealth, ArchiveState
from viewer.app import create_app

NOWHERE = OrthancConnection(
    "http://127.0.0.1:1", "user", "password"
)  # never asked: /healthz reads no archive


def _healthz(tmp_path: Path, health: ArchiveHealth | None) -> TestClient:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    return TestClient(create_app(settings, NOWHERE, None if health is None else lambda: health))


def test_with_an_external_orthanc_it_says_ok(tmp_path: Path) -> None:
    answer = _healthz(tmp_path, None).get("/healthz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


def test_while_the_child_orthanc_restarts_it_answers_503_with_the_reason(tmp_path: Path) -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    down = ArchiveHealth(ArchiveState.RESTARTING, since, 2, "killed by SIGSEGV")
    answer = _healthz(tmp_path, down).get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {
        "status": "archive down",
        "archive": {
            "state": "restarting",
            "since": "2026-01-01T00:00:00+00:00",
            "restarts": 2,
            "last_exit": "killed by SIGSEGV",
        },
    }


def test_a_running_child_orthanc_is_ok_and_shows_its_restarts(tmp_path: Path) -> None:
    up = ArchiveHealth(ArchiveState.RUNNING, datetime(2026, 1, 1, tzinfo=UTC), 1, "killed by SIGKILL")
    answer = _healthz(tmp_path, up).get("/healthz")
    assert answer.status_code == 200
    assert answer.json()["archive"]["restarts"] == 1
