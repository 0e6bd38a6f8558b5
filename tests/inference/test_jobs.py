"""Jobs are durable and unique per (series, model version); claims never overlap; a job that keeps failing
ends failed with its reason; a job whose worker died is taken back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from inference import jobs
from inference.jobs import Job, JobState
from openaim.db import transaction, utcnow
from tests.inference.conftest import add_version


@pytest.fixture
def version_id(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as db:
        return add_version(db)


def _state(factory: sessionmaker[Session], job_id: int) -> Job:
    with factory() as db:
        job = db.get(Job, job_id)
        assert job is not None
        return job


def test_a_series_is_queued_once_per_model_version(factory: sessionmaker[Session], version_id: int) -> None:
    with transaction(factory) as db:
        assert jobs.enqueue(db, "1.1", "1.1.1", version_id) is True
        assert jobs.enqueue(db, "1.1", "1.1.1", version_id) is False
    with factory() as db:
        assert len(db.scalars(select(Job)).all()) == 1


def test_a_claimed_job_is_not_claimed_again_until_its_lease_expires(
    factory: sessionmaker[Session], version_id: int
) -> None:
    with transaction(factory) as db:
        jobs.enqueue(db, "1.1", "1.1.1", version_id)
    first = jobs.claim(factory, limit=10, lease_seconds=60, max_attempts=5)
    assert [job.attempt for job in first] == [1]
    assert jobs.claim(factory, limit=10, lease_seconds=60, max_attempts=5) == []

    with transaction(factory) as db:  # the worker died: its lease runs out
        db.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    again = jobs.claim(factory, limit=10, lease_seconds=60, max_attempts=5)
    assert [(job.id, job.attempt) for job in again] == [(first[0].id, 2)]


def test_transient_errors_back_off_then_end_failed_with_the_reason(
    factory: sessionmaker[Session], version_id: int
) -> None:
    with transaction(factory) as db:
        jobs.enqueue(db, "1.1", "1.1.1", version_id)
    delays = []
    for attempt in range(1, 4):
        with transaction(factory) as db:
            db.execute(update(Job).values(next_attempt_at=utcnow()))  # skip the wait
        [job] = jobs.claim(factory, limit=1, lease_seconds=60, max_attempts=3)
        assert job.attempt == attempt
        before = utcnow()
        with transaction(factory) as db:
            state = jobs.retry_later(db, job, "Orthanc answered 503", max_attempts=3, base_seconds=2)
        row = _state(factory, job.id)
        if attempt < 3:
            assert state is JobState.QUEUED
            delays.append((row.next_attempt_at - before).total_seconds())
    assert delays[0] == pytest.approx(2, abs=0.5)
    assert delays[1] == pytest.approx(4, abs=0.5)
    assert row.state == JobState.FAILED
    assert row.reason == "failed 3 times; last error: Orthanc answered 503"
    assert jobs.claim(factory, limit=1, lease_seconds=60, max_attempts=3) == []


def test_a_job_that_kills_its_worker_every_time_ends_failed(
    factory: sessionmaker[Session], version_id: int
) -> None:
    with transaction(factory) as db:
        jobs.enqueue(db, "1.1", "1.1.1", version_id)
    for _ in range(2):
        assert jobs.claim(factory, limit=1, lease_seconds=-1, max_attempts=2)  # lease already over
    assert jobs.claim(factory, limit=1, lease_seconds=60, max_attempts=2) == []
    [row] = _all(factory)
    assert row.state == JobState.FAILED
    assert "worker stopped" in (row.reason or "")


def test_finished_jobs_keep_their_state_and_reason(factory: sessionmaker[Session], version_id: int) -> None:
    with transaction(factory) as db:
        jobs.enqueue(db, "1.1", "1.1.1", version_id)
    [job] = jobs.claim(factory, limit=1, lease_seconds=60, max_attempts=5)
    with transaction(factory) as db:
        jobs.finish(db, job.id, JobState.NOT_APPLICABLE, "a 1x1 image")
    row = _state(factory, job.id)
    assert (row.state, row.reason) == (JobState.NOT_APPLICABLE, "a 1x1 image")
    assert row.finished_at is not None
    assert jobs.claim(factory, limit=1, lease_seconds=60, max_attempts=5) == []


def _all(factory: sessionmaker[Session]) -> list[Job]:
    with factory() as db:
        return list(db.scalars(select(Job)).all())
