"""The watcher reads a re-stabilised study cheaply: series that already have jobs, and the SR and SEG series
those jobs write, are known without asking Orthanc for their attributes."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from inference import jobs
from inference.dicom_results.uids import ResultUids
from inference.watcher import routed_series
from openaim.db import transaction
from tests.inference.conftest import add_version


def test_a_study_knows_its_routed_series_and_the_result_series_of_every_model(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as db:
        first, second = add_version(db, "m1", "1.2.3"), add_version(db, "m2", "1.2.4")
        jobs.enqueue(db, "1.9", "1.9.1", first)
        jobs.enqueue(db, "1.9", "1.9.1", second)
        jobs.enqueue(db, "1.8", "1.8.1", first)  # another study

    with factory() as db:
        known = routed_series(db, "1.9")

    expected = {"1.9.1", *ResultUids.of("1.9.1", "1.2.3").series, *ResultUids.of("1.9.1", "1.2.4").series}
    assert known == expected
    assert len(expected) == 5  # each model's results go in their own two series


def test_a_study_without_jobs_has_no_routed_series(factory: sessionmaker[Session]) -> None:
    with factory() as db:
        assert routed_series(db, "1.7") == set()
