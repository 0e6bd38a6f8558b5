"""The child Orthanc is brought back when it dies: killed with SIGKILL, it answers again on the same port with
the same storage, the platform's /healthz says it was restarted and why; a child that keeps dying is
started again less and less often, never waiting longer than the cap."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from openaim.settings import Settings
from orthanc import OrthancServer
from orthanc.launcher import free_port
from orthanc.rest import OrthancRest
from orthanc.supervisor import ArchiveState, OrthancSupervisor, backoff, exit_reason
from tests.inference import studies
from viewer.app import create_app

pytestmark = pytest.mark.slow


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[OrthancSupervisor]:
    server = OrthancServer(tmp_path / "orthanc", http_port=free_port(), stable_age=1)
    supervisor = OrthancSupervisor(server, max_backoff=0.8, first_backoff=0.1)
    supervisor.start()
    try:
        yield supervisor
    finally:
        supervisor.stop()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds it took until ``condition``; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def _pid(supervisor: OrthancSupervisor) -> int:
    assert supervisor.server.process is not None
    return supervisor.server.process.pid


def test_a_killed_orthanc_answers_again_on_its_port_with_its_studies(
    supervisor: OrthancSupervisor, shared_data: Path, tmp_path: Path
) -> None:
    connection = supervisor.server.connection
    image = studies.renewed(studies.chest_xray(shared_data))
    assert [response.status_code for response in studies.store(connection, image)] == [200]
    before = _pid(supervisor)
    app = create_app(
        Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}"), connection, supervisor.health
    )
    healthz = TestClient(app)

    os.kill(before, signal.SIGKILL)
    _wait(lambda: supervisor.health().state == ArchiveState.RESTARTING, 5, "the death is seen")
    assert healthz.get("/healthz").status_code == 503
    took = _wait(lambda: supervisor.health().state == ArchiveState.RUNNING, 30, "Orthanc is back")

    assert took < 30 and _pid(supervisor) != before
    with OrthancRest(connection) as rest:  # same address, same credentials, same storage
        assert rest.is_alive()
        assert rest.lookup(image.SOPInstanceUID, "Instance")
    answer = healthz.get("/healthz")
    assert answer.status_code == 200
    assert answer.json()["archive"] | {"since": None} == {
        "state": "running",
        "since": None,
        "restarts": 1,
        "last_exit": "killed by SIGKILL",
    }


def test_an_orthanc_that_keeps_dying_is_started_less_and_less_often(
    supervisor: OrthancSupervisor, tmp_path: Path
) -> None:
    """After an upgrade gone wrong, say: the binary now exits at once. Each try is logged in a file by a
    stand-in executable, so the test sees the real waits between starts."""
    tries = tmp_path / "tries"
    broken = tmp_path / "broken-orthanc"
    broken.write_text(f'#!/bin/sh\ndate +%s.%N >> "{tries}"\nexit 3\n')
    broken.chmod(0o755)
    supervisor.server.executable = str(broken)

    os.kill(_pid(supervisor), signal.SIGKILL)
    _wait(lambda: tries.exists() and len(tries.read_text().split()) >= 6, 20, "six tries to start")

    health = supervisor.health()
    assert (health.state, health.restarts, health.last_exit) == (
        ArchiveState.RESTARTING,
        0,
        "exited with code 3",
    )
    times = [float(value) for value in tries.read_text().split()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # waits of 0.2, 0.4, 0.8, 0.8, 0.8 s (first 0.1, doubling, capped at 0.8), plus the failed start itself
    assert [round(gap, 1) >= wait for gap, wait in zip(gaps, (0.2, 0.4, 0.8, 0.8, 0.8), strict=False)] == [
        True
    ] * 5
    assert max(gaps) < 0.8 + 1.0, gaps  # the cap holds

    supervisor.server.executable = "Orthanc"  # repaired: the next try brings it back
    _wait(lambda: supervisor.health().state == ArchiveState.RUNNING, 30, "Orthanc is back")
    assert supervisor.health().restarts == 1


def test_stopping_the_platform_is_not_a_death(supervisor: OrthancSupervisor) -> None:
    process = supervisor.server.process
    supervisor.stop()
    time.sleep(0.5)
    assert process is not None and process.poll() is not None
    assert supervisor.server.process is process  # nothing was started again
    assert supervisor.health().state == ArchiveState.STOPPED


def test_back_off_doubles_from_the_first_wait_up_to_the_cap() -> None:
    assert [backoff(deaths, cap=60) for deaths in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_exit_reasons_name_the_signal() -> None:
    assert exit_reason(-9) == "killed by SIGKILL"
    assert exit_reason(-11) == "killed by SIGSEGV"
    assert exit_reason(1) == "exited with code 1"
