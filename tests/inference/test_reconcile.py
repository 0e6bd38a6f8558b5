"""The reconciliation sweep routes what the change feed never announced: a stable study whose StableStudy
change was lost ends with a job (or an unrouted row with its reason) all the same, once; a study still
settling is left to its own change; our own SR and SEG are never taken for news. Real Orthanc, real
database (SQLite, and PostgreSQL where configured)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference import catalog, reconcile
from inference import service as service_module
from inference.archive import ArchiveUnavailable, InferenceArchive
from inference.catalog import Mode
from inference.jobs import Job, JobState
from inference.router import UnroutedSeries
from inference.service import InferenceService
from inference.watcher import CURSOR_NAME, ChangeCursor, poll
from openaim.db import transaction
from openaim.settings import Settings
from orthanc import OrthancConnection, OrthancServer
from orthanc.launcher import free_port
from orthanc.rest import OrthancRest
from tests.inference import studies
from tests.inference.tiny_model import MODULE, write_tiny_package

FRONTAL_CHEST = [
    {"keyword": "Modality", "values": ["CR", "DX"]},
    {"keyword": "BodyPartExamined", "values": ["CHEST"]},
    {"keyword": "ViewPosition", "values": ["PA", "AP"]},
]
STABLE_AGE = 2  # seconds: long enough to sweep a study that is still settling


@dataclass
class Platform:
    server: OrthancServer
    orthanc: OrthancConnection
    db: sessionmaker[Session]
    service: InferenceService

    @property
    def archive(self) -> InferenceArchive:
        return self.service.archive

    def sweep(self) -> reconcile.SweepReport:
        return reconcile.sweep(self.archive, self.db, self.service._candidates, page=2)  # pages of 2: paging

    def store_and_lose_its_change(self, *images: Dataset) -> None:
        """Store, wait until Orthanc counts the studies stable, and move the watcher's cursor past their
        StableStudy changes, as if Orthanc had been stopped before it announced them."""
        assert {response.status_code for response in studies.store(self.orthanc, *images)} == {200}
        with OrthancRest(self.orthanc) as rest:
            ids = [rest.lookup(image.StudyInstanceUID, "Study")[0] for image in images]
        deadline = time.monotonic() + 30
        while not all(self.archive.study_is_stable(study_id) for study_id in ids):
            assert time.monotonic() < deadline, "Orthanc never counted the studies stable"
            time.sleep(0.2)
        with transaction(self.db) as db:
            cursor = db.get(ChangeCursor, CURSOR_NAME) or ChangeCursor(name=CURSOR_NAME)
            cursor.last_seq = self.archive.last_change()
            db.add(cursor)

    def jobs(self) -> dict[str, int]:
        """Series UID -> how many jobs it has."""
        with self.db() as db:
            found: dict[str, int] = {}
            for series_uid in db.scalars(select(Job.series_uid)):
                found[series_uid] = found.get(series_uid, 0) + 1
            return found

    def unrouted(self) -> dict[str, str]:
        with self.db() as db:
            return {row.series_uid: row.reason for row in db.scalars(select(UnroutedSeries))}


@pytest.fixture
def platform(tmp_path: Path, factory: sessionmaker[Session]) -> Iterator[Platform]:
    server = OrthancServer(tmp_path / "orthanc", http_port=free_port(), stable_age=STABLE_AGE)
    connection = server.start()
    settings = Settings(data_dir=tmp_path / "data", model_modules=(MODULE,), inference_reconcile_seconds=1.0)
    package = write_tiny_package(tmp_path / "tiny", selectors=FRONTAL_CHEST)
    with catalog.catalog_transaction(factory) as db:
        catalog.install(db, package, catalog.packages_dir(settings), "test", allowed_modules=(MODULE,))
    with catalog.catalog_transaction(factory) as db:
        catalog.set_mode(db, "openaim.tiny-cxr", "1.0.0", Mode.CLINICAL, "test")
    service = InferenceService(settings, connection, factory)
    try:
        yield Platform(server, connection, factory, service)
    finally:
        service.close()
        server.stop()


def test_a_stable_study_whose_change_was_lost_is_routed_by_the_sweep(
    platform: Platform, shared_data: Path
) -> None:
    chest = studies.renewed(studies.chest_xray(shared_data, 0))
    lateral = studies.lateral(shared_data)
    platform.store_and_lose_its_change(chest, lateral)
    poll(platform.archive, platform.db, platform.service._candidates)
    assert platform.jobs() == {} and platform.unrouted() == {}  # the feed alone never routes them

    report = platform.sweep()

    assert report.series_routed == 2 and report.studies_unaccounted == 2
    assert platform.jobs() == {chest.SeriesInstanceUID: 1}
    assert platform.unrouted() == {
        lateral.SeriesInstanceUID: "openaim.tiny-cxr 1.0.0: ViewPosition is LL (expects PA, AP)"
    }


def test_sweeping_again_adds_nothing(platform: Platform, shared_data: Path) -> None:
    chest = studies.renewed(studies.chest_xray(shared_data, 1))
    lateral = studies.lateral(shared_data)
    platform.store_and_lose_its_change(chest, lateral)
    platform.sweep()
    jobs, unrouted = platform.jobs(), platform.unrouted()

    again = platform.sweep()

    assert (again.studies_unaccounted, again.series_routed) == (0, 0)
    assert (platform.jobs(), platform.unrouted()) == (jobs, unrouted)


def test_a_study_still_settling_is_left_to_its_stable_study_change(
    platform: Platform, shared_data: Path
) -> None:
    chest = studies.renewed(studies.chest_xray(shared_data, 2))
    assert [response.status_code for response in studies.store(platform.orthanc, chest)] == [200]

    report = platform.sweep()  # well within StableAge

    assert report.studies_unaccounted == 1 and report.series_routed == 0
    assert platform.jobs() == {}


def test_the_service_sweeps_when_it_starts_and_then_every_interval(
    platform: Platform, shared_data: Path
) -> None:
    first = studies.renewed(studies.chest_xray(shared_data, 3))
    platform.store_and_lose_its_change(first)
    platform.service.step()  # the first step: the start-up sweep
    assert platform.jobs() == {first.SeriesInstanceUID: 1}

    second = studies.renewed(studies.chest_xray(shared_data, 4))
    platform.store_and_lose_its_change(second)  # takes StableAge: longer than the 1 s interval
    platform.service.step()
    assert platform.jobs() == {first.SeriesInstanceUID: 1, second.SeriesInstanceUID: 1}


def test_after_an_archive_outage_the_service_sweeps_without_waiting_for_the_interval(
    platform: Platform, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orthanc killed and started again (by the supervisor, say) while the service runs: what was settling
    lost its StableStudy, and is routed as soon as Orthanc answers again, not an interval later."""
    monkeypatch.setattr(service_module, "SWEEP_AFTER_OUTAGE_SECONDS", 0.0)
    service = platform.service
    service.settings = service.settings.model_copy(update={"inference_reconcile_seconds": 3600.0})
    service.step()  # the start-up sweep: the next one is an hour away
    chest = studies.renewed(studies.chest_xray(shared_data, 6))
    platform.store_and_lose_its_change(chest)
    service.step()
    assert platform.jobs() == {}

    assert platform.server.process is not None
    platform.server.process.send_signal(signal.SIGKILL)
    platform.server.process.wait(10)
    with pytest.raises(ArchiveUnavailable):
        service.step()
    platform.server.start()
    service.step()

    assert platform.jobs() == {chest.SeriesInstanceUID: 1}


def test_our_own_results_are_never_taken_for_unrouted_series(platform: Platform, shared_data: Path) -> None:
    """After a job stored its SR and SEG, the sweep finds every series accounted for (so it asks Orthanc
    nothing more), and lists none of ours as unrouted."""
    chest = studies.bright_square(studies.renewed(studies.chest_xray(shared_data, 5)))
    platform.store_and_lose_its_change(chest)
    platform.sweep()
    while platform.service.run_due():
        pass
    platform.service.flush()
    with platform.db() as db:
        assert db.scalars(select(Job.state)).all() == [JobState.DONE.value]
    with OrthancRest(platform.orthanc) as rest:
        [study_id] = rest.lookup(chest.StudyInstanceUID, "Study")
        assert len(rest.study_series(study_id)) >= 2  # the image and our SR (and SEG when positive)

    report = platform.sweep()

    assert (report.studies_unaccounted, report.series_routed) == (0, 0)
    assert platform.unrouted() == {}
