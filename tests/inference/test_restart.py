"""A restart in the middle loses nothing and runs nothing twice: the real `openaim inference` process is
killed with SIGKILL while it works through a queue, started again, and every study ends with exactly one
result in the database and one SR in Orthanc. Killed together with Orthanc just after studies arrived (or
mid-batch), the studies whose StableStudy Orthanc never announced are routed all the same."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from inference import catalog
from inference.catalog import Mode
from inference.jobs import Job, JobState
from inference.results import InferenceResult
from openaim.db import make_engine, session_factory, upgrade
from openaim.settings import Settings
from orthanc import OrthancConnection, OrthancServer
from orthanc.launcher import free_port
from orthanc.rest import OrthancRest
from tests.inference import studies
from tests.inference.tiny_model import MODULE, write_tiny_package

STUDIES = 12

pytestmark = pytest.mark.slow


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[OrthancConnection]:
    server = OrthancServer(tmp_path / "orthanc", http_port=free_port(), stable_age=1)
    yield server.start()
    server.stop()


def _service(settings_env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "openaim"), "inference"],
        env=os.environ | settings_env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _count(factory: sessionmaker[Session], state: JobState | None = None) -> int:
    with factory() as db:
        if state is None:
            return db.scalar(select(func.count()).select_from(InferenceResult)) or 0
        return db.scalar(select(func.count()).select_from(Job).where(Job.state == state.value)) or 0


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def test_killing_the_service_mid_queue_loses_nothing_and_duplicates_nothing(
    archive: OrthancConnection, shared_data: Path, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'openaim.db'}"
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, model_modules=(MODULE,))
    upgrade(database_url)
    engine = make_engine(database_url)
    factory = session_factory(engine, settings.resolved_audit_key)
    with catalog.catalog_transaction(factory) as db:
        package = write_tiny_package(tmp_path / "tiny")
        catalog.install(db, package, catalog.packages_dir(settings), "test", allowed_modules=(MODULE,))
    with catalog.catalog_transaction(factory) as db:
        catalog.set_mode(db, "openaim.tiny-cxr", "1.0.0", Mode.SHADOW, "test")

    images = [studies.renewed(studies.chest_xray(shared_data, index)) for index in range(STUDIES)]
    assert all(response.status_code == 200 for response in studies.store(archive, *images))

    env = {
        "OPENAIM_DATA_DIR": str(tmp_path / "data"),
        "OPENAIM_DATABASE_URL": database_url,
        "OPENAIM_ORTHANC_URL": archive.url,
        "OPENAIM_ORTHANC_USERNAME": archive.username,
        "OPENAIM_ORTHANC_PASSWORD": archive.password,
        "OPENAIM_MODEL_MODULES": f'["{MODULE}"]',
        "OPENAIM_INFERENCE_BATCH_SIZE": "1",  # one job at a time, so that the kill lands mid-queue
        "OPENAIM_INFERENCE_LEASE_SECONDS": "2",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    log = tmp_path / "service.log"
    first = _service(env, log)
    try:
        _wait(lambda: _count(factory) >= 2, 120, "the first results are in")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    done_at_kill = _count(factory)
    assert done_at_kill < STUDIES, "the queue was finished before the kill: nothing was tested"

    second = _service(env, log)
    try:
        _wait(lambda: _count(factory, JobState.DONE) == STUDIES, 120, "every job is done")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]

    with factory() as db:
        jobs = db.scalars(select(Job)).all()
        results = db.scalars(select(InferenceResult)).all()
    engine.dispose()
    assert len(jobs) == STUDIES and {job.state for job in jobs} == {JobState.DONE.value}
    assert sorted(result.series_uid for result in results) == sorted(
        image.SeriesInstanceUID for image in images
    )
    with archive.client() as client:  # one SR per study in Orthanc, however often a job started
        for image in images:
            study = client.post("/tools/lookup", content=image.StudyInstanceUID).json()[0]["ID"]
            modalities = [
                series["MainDicomTags"].get("Modality")
                for series in client.get(f"/studies/{study}/series").json()
            ]
            assert modalities.count("SR") == 1, modalities
            sr_series = [
                s
                for s in client.get(f"/studies/{study}/series").json()
                if s["MainDicomTags"].get("Modality") == "SR"
            ]
            assert len(sr_series[0]["Instances"]) == 1


@pytest.mark.parametrize("when", ["just after storing", "mid-batch"])
def test_studies_stored_just_before_orthanc_and_the_service_are_killed_are_all_routed(
    when: str, shared_data: Path, tmp_path: Path
) -> None:
    """Orthanc announces StableStudy from a timer it keeps in memory: killed with SIGKILL before a study's
    StableAge has passed, it never announces it, although it counts it stable after its restart. The
    reconciliation sweep routes such studies: every stored series ends with exactly one job, all done."""
    server = OrthancServer(tmp_path / "orthanc", http_port=free_port(), stable_age=2)  # the kill lands first
    archive = server.start()
    database_url = f"sqlite:///{tmp_path / 'openaim.db'}"
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, model_modules=(MODULE,))
    upgrade(database_url)
    engine = make_engine(database_url)
    factory = session_factory(engine, settings.resolved_audit_key)
    with catalog.catalog_transaction(factory) as db:
        package = write_tiny_package(tmp_path / "tiny")
        catalog.install(db, package, catalog.packages_dir(settings), "test", allowed_modules=(MODULE,))
    with catalog.catalog_transaction(factory) as db:
        catalog.set_mode(db, "openaim.tiny-cxr", "1.0.0", Mode.SHADOW, "test")
    env = {
        "OPENAIM_DATA_DIR": str(tmp_path / "data"),
        "OPENAIM_DATABASE_URL": database_url,
        "OPENAIM_ORTHANC_URL": archive.url,
        "OPENAIM_ORTHANC_USERNAME": archive.username,
        "OPENAIM_ORTHANC_PASSWORD": archive.password,
        "OPENAIM_MODEL_MODULES": f'["{MODULE}"]',
        "OPENAIM_INFERENCE_BATCH_SIZE": "1",
        "OPENAIM_INFERENCE_LEASE_SECONDS": "2",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    log = tmp_path / "service.log"
    images = [studies.renewed(studies.chest_xray(shared_data, index)) for index in range(6)]
    first = _service(env, log)
    try:
        studies.store(archive, *images[:3])
        if when == "mid-batch":
            _wait(lambda: _count(factory) >= 1, 120, "the first results are in")
            assert _count(factory, JobState.QUEUED) >= 1, (
                "the queue was empty at the kill: nothing was tested"
            )
        lost = images[3:]
        assert {response.status_code for response in studies.store(archive, *lost)} == {200}
    finally:
        first.send_signal(signal.SIGKILL)
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        first.wait(10)
        server.process.wait(10)

    server.start()
    try:
        time.sleep(3)  # StableAge has long passed: Orthanc counts the studies stable, and announced none
        with OrthancRest(archive) as rest:
            lost_ids = {rest.lookup(image.StudyInstanceUID, "Study")[0] for image in lost}
            changes, _last, _done = rest.changes(0, 1000)
            assert all(rest.study(study_id)["IsStable"] for study_id in lost_ids)
        announced = {c.resource_id for c in changes if c.change_type == "StableStudy"}
        assert not announced & lost_ids, "Orthanc announced the studies: the lost change was not reproduced"

        second = _service(env, log)
        try:
            _wait(lambda: _count(factory, JobState.DONE) >= len(images), 120, "every job is done")
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, log.read_text()[-3000:]
        with factory() as db:
            series = sorted(job.series_uid for job in db.scalars(select(Job)))
            assert {job.state for job in db.scalars(select(Job))} == {JobState.DONE.value}
        assert series == sorted(image.SeriesInstanceUID for image in images)  # each one once, none lost
    finally:
        engine.dispose()
        server.stop()
