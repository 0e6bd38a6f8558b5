"""The inference service end to end, against a real Orthanc and a real database: a stable chest X-ray
gets one result (TID 1500 SR + fractional SEG in Orthanc, findings in the database); what no model accepts
and what no model can read each end with a recorded reason, and the other jobs go on."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference import catalog, jobs
from inference import service as service_module
from inference.catalog import Mode, ModelVersion
from inference.jobs import Job, JobState
from inference.results import InferenceResult
from inference.router import UnroutedSeries
from inference.service import InferenceService, model_threads
from openaim.audit import AuditEvent, EventType
from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.settings import Settings
from orthanc import OrthancConnection, OrthancServer
from orthanc.launcher import free_port
from tests.inference import studies
from tests.inference.tiny_model import MODULE, write_tiny_package

FRONTAL_CHEST = [
    {"keyword": "Modality", "values": ["CR", "DX"]},
    {"keyword": "BodyPartExamined", "values": ["CHEST"]},
    {"keyword": "ViewPosition", "values": ["PA", "AP"]},
]


@dataclass
class Platform:
    server: OrthancServer
    orthanc: OrthancConnection
    db: sessionmaker[Session]
    service: InferenceService

    def run_until_idle(self, timeout: float = 60.0) -> None:
        """Step the service until every job has ended and no new change arrives for a while."""
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            busy = self.service.step()
            if busy or self._open_jobs():
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 3.0:  # StableAge (1 s) passed with nothing new
                return
            time.sleep(0.1)
        raise AssertionError("the service did not finish in time")

    def _open_jobs(self) -> int:
        with self.db() as db:
            states = (JobState.QUEUED.value, JobState.RUNNING.value)
            return len(db.scalars(select(Job).where(Job.state.in_(states))).all())

    def job_for(self, series_uid: str) -> Job:
        with self.db() as db:
            job = db.scalar(select(Job).where(Job.series_uid == series_uid))
            assert job is not None, "the series was never routed to the model"
            return job


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    server = OrthancServer(tmp_path / "orthanc", http_port=free_port(), stable_age=1)
    connection = server.start()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'openaim.db'}",
        model_modules=(MODULE,),
        inference_retry_seconds=0.1,
        inference_max_attempts=2,
    )
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    factory = session_factory(engine, settings.resolved_audit_key)
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
        engine.dispose()
        server.stop()


def test_a_stable_chest_xray_gets_one_sr_one_seg_and_its_findings(
    platform: Platform, shared_data: Path
) -> None:
    image = studies.bright_square(studies.chest_xray(shared_data))
    [response] = studies.store(platform.orthanc, image)
    assert response.status_code == 200

    platform.run_until_idle()

    job = platform.job_for(image.SeriesInstanceUID)
    assert (job.state, job.reason) == (JobState.DONE, None)
    with platform.db() as db:  # the SR/SEG re-stabilised the study; they are not routed as new series
        assert db.scalars(select(UnroutedSeries)).all() == []
    with platform.db() as db:
        result = db.scalar(select(InferenceResult).where(InferenceResult.job_id == job.id))
        assert result is not None
        assert result.sop_instance_uid == image.SOPInstanceUID
        assert [finding.label for finding in result.findings] == ["Effusion", "Pneumothorax"]
        audited = db.scalars(select(AuditEvent).where(AuditEvent.event_type == EventType.AI_INFERENCE)).all()
        assert [event.object_uid for event in audited] == [image.StudyInstanceUID]

    sr = _instance(platform.orthanc, result.sr_uid)
    assert sr.StudyInstanceUID == image.StudyInstanceUID
    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    algorithm = [item for item in report.ContributingEquipmentSequence if "DeviceUID" in item]
    assert [item.DeviceUID for item in algorithm] == ["1.2.826.0.1.3680043.10.1234.1.0"]
    assert algorithm[0].ManufacturerModelName == "Tiny chest X-ray classifier"
    if result.seg_uid is not None:  # a SEG exists exactly when some finding was positive
        assert any(finding.positive for finding in result.findings)
        seg = hd.seg.Segmentation.from_dataset(_instance(platform.orthanc, result.seg_uid))
        assert seg.SegmentationType == "FRACTIONAL"
    else:
        assert not any(finding.positive for finding in result.findings)


def test_running_the_queue_again_adds_nothing(platform: Platform, shared_data: Path) -> None:
    image = studies.chest_xray(shared_data, 6)
    studies.store(platform.orthanc, image)
    platform.run_until_idle()
    studies.store(platform.orthanc, image)  # the modality sends it again
    platform.run_until_idle()
    with platform.db() as db:
        assert len(db.scalars(select(InferenceResult)).all()) == 1
        assert len(db.scalars(select(Job)).all()) == 1


def test_bad_input_ends_with_a_reason_and_the_other_jobs_go_on(platform: Platform, shared_data: Path) -> None:
    ct = pydicom.dcmread(sorted((shared_data / "dicom" / "ct_3slice").glob("*"))[0])
    side = studies.lateral(shared_data)
    sr = pydicom.dcmread(next((shared_data / "dicom" / "foreign_ai" / "highdicom").glob("*sr*")))
    tiny = studies.one_pixel(shared_data)
    huge = studies.huge_header(shared_data)
    pdf = studies.pdf_labelled_as_chest_xray(shared_data)
    good = studies.chest_xray(shared_data, 7)
    responses = studies.store(platform.orthanc, ct, side, sr, tiny, huge, pdf, good)
    assert [response.status_code for response in responses] == [200] * 7
    truncated = studies.store(platform.orthanc, studies.truncated_bytes(shared_data))[0]

    platform.run_until_idle()

    with platform.db() as db:
        unrouted = {row.series_uid: row.reason for row in db.scalars(select(UnroutedSeries))}
    assert "Modality is CT" in unrouted[ct.SeriesInstanceUID]
    assert "ViewPosition is LL (expects PA, AP)" in unrouted[side.SeriesInstanceUID]
    assert "Modality is SR" in unrouted[sr.SeriesInstanceUID]

    for dataset, words in ((tiny, "too small"), (huge, "20000"), (pdf, "not an image")):
        job = platform.job_for(dataset.SeriesInstanceUID)
        assert job.state == JobState.NOT_APPLICABLE, job.reason
        assert words in (job.reason or ""), job.reason
    assert platform.job_for(good.SeriesInstanceUID).state == JobState.DONE
    # Orthanc refuses a truncated file at the door, so it never reaches a model (the runtime's own refusal
    # of truncated pixel data is tested in tests/inference/runtime/test_pixels.py).
    assert truncated.status_code == 400


def test_an_archive_outage_is_retried_and_nothing_is_lost(platform: Platform, shared_data: Path) -> None:
    image = studies.chest_xray(shared_data, 8)
    studies.store(platform.orthanc, image)
    with transaction(platform.db) as db:
        version = db.scalars(select(ModelVersion)).one()
        jobs.enqueue(db, image.StudyInstanceUID, image.SeriesInstanceUID, version.id)

    platform.server.stop()
    assert platform.service.run_due() == 1
    job = platform.job_for(image.SeriesInstanceUID)
    assert job.state == JobState.QUEUED  # not failed: the archive is worth asking again
    assert "unreachable" in (job.reason or ""), job.reason

    platform.server.start()
    time.sleep(0.2)  # the first back-off (0.1 s)
    platform.run_until_idle()
    job = platform.job_for(image.SeriesInstanceUID)
    assert (job.state, job.attempts) == (JobState.DONE, 2)


def test_a_cr_with_pixel_spacing_alone_gets_its_sr(platform: Platform, shared_data: Path) -> None:
    """Real CR files often carry Pixel Spacing and no Imager Pixel Spacing: their SR was never made."""
    image = studies.renewed(studies.bright_square(studies.chest_xray(shared_data, 10)))
    image.Modality = "CR"
    image.PixelSpacing = image.ImagerPixelSpacing
    del image.ImagerPixelSpacing
    studies.store(platform.orthanc, image)

    platform.run_until_idle()

    job = platform.job_for(image.SeriesInstanceUID)
    assert (job.state, job.attempts, job.reason) == (JobState.DONE, 1, None)
    with platform.db() as db:
        result = db.scalar(select(InferenceResult).where(InferenceResult.job_id == job.id))
        assert result is not None
    report = hd.sr.Comprehensive3DSR.from_dataset(_instance(platform.orthanc, result.sr_uid))
    assert report.StudyInstanceUID == image.StudyInstanceUID


def test_a_result_that_cannot_be_built_fails_at_once_with_its_reason(
    platform: Platform, shared_data: Path
) -> None:
    """Building the SR/SEG is deterministic: retrying it only delays the failure (it took five attempts)."""
    image = studies.renewed(studies.chest_xray(shared_data, 9))
    # well formed, but no SOP class highdicom knows: the SR cannot be built, now or on any retry
    image.SOPClassUID = image.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.10.1234.99.1"
    studies.store(platform.orthanc, image)

    platform.run_until_idle()

    job = platform.job_for(image.SeriesInstanceUID)
    assert (job.state, job.attempts) == (JobState.FAILED, 1)  # the fixture allows 2
    assert "could not be built: KeyError" in (job.reason or ""), job.reason


def _instance(orthanc: OrthancConnection, sop_instance_uid: str) -> pydicom.Dataset:
    with orthanc.client() as client:
        [match] = client.post("/tools/lookup", content=sop_instance_uid).json()
        data = client.get(f"/instances/{match['ID']}/file").content
    return pydicom.dcmread(io.BytesIO(data))


def test_the_model_leaves_a_core_to_each_busy_result_writer() -> None:
    assert model_threads(2, writers_busy=0) == 2  # one study at a time: every core for the shortest wait
    assert model_threads(2, writers_busy=1) == 1
    assert model_threads(16, writers_busy=2) == 14
    assert model_threads(2, writers_busy=2) == 1  # never fewer than one


def test_an_idle_service_takes_jobs_queued_elsewhere_on_its_next_idle_claim(
    platform: Platform, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "IDLE_CLAIM_SECONDS", 0.5)
    image = studies.chest_xray(shared_data, 9)
    studies.store(platform.orthanc, image)
    platform.run_until_idle()  # routed and done; its study's changes are read
    assert platform.service.run_due() == 0  # nothing due: the next idle claim is half a second away

    elsewhere = "1.2.826.0.1.3680043.10.1234.9.9"  # as another service, or a retry, would leave a job
    with transaction(platform.db) as db:
        version = db.scalars(select(ModelVersion)).one()
        jobs.enqueue(db, image.StudyInstanceUID, elsewhere, version.id)
    platform.service.step()
    assert platform.job_for(elsewhere).state == JobState.QUEUED  # an idle step reads /changes only

    time.sleep(0.5)
    platform.service.step()
    job = platform.job_for(elsewhere)
    assert job.state == JobState.NOT_APPLICABLE, job.reason  # claimed: that series is not in the archive
