"""The study index follows Orthanc: a study is indexed when it arrives (its image modalities only, never
the SR/SEG that AI results are), leaves when Orthanc deletes it, and one stored while the follower was
stopped is there after it starts again; a first run indexes what Orthanc already holds. Real Orthanc, real
database (SQLite, and PostgreSQL where configured)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference import study_follower
from inference.archive import InferenceArchive
from inference.study_index import IndexedStudy, record_of
from inference.watcher import ChangeCursor
from orthanc import OrthancConnection
from orthanc.rest import OrthancRest
from tests.viewer.ai_fixtures import renumbered, store_chest_image
from tests.viewer.study_index_fixtures import catch_up, follow_from_now


def _indexed(factory: sessionmaker[Session], study_uid: str) -> IndexedStudy | None:
    with factory() as db:
        return db.scalars(select(IndexedStudy).where(IndexedStudy.study_uid == study_uid)).first()


def _store(orthanc: OrthancConnection, datasets: list[pydicom.Dataset]) -> None:
    with orthanc.client() as client:
        for dataset in datasets:
            buffer = io.BytesIO()
            dataset.save_as(buffer, enforce_file_format=True)
            client.post("/instances", content=buffer.getvalue()).raise_for_status()


def _orthanc_id(orthanc: OrthancConnection, study_uid: str) -> str:
    with OrthancRest(orthanc) as rest:
        return rest.lookup(study_uid, "Study")[0]


def test_a_new_study_is_indexed_with_what_the_worklist_and_monitoring_need(
    orthanc: OrthancConnection, shared_data: Path, factory: sessionmaker[Session]
) -> None:
    follow_from_now(orthanc, factory)
    image = store_chest_image(orthanc, shared_data, "20240301", "IDX-NEW", accession="ACC-IDX-1")
    catch_up(orthanc, factory)
    row = _indexed(factory, image.study_uid)
    assert row is not None
    assert (row.patient_id, row.accession, row.study_date, row.modalities) == (
        "IDX-NEW",
        "ACC-IDX-1",
        "20240301",
        "DX",
    )
    assert (row.patient_name, row.sex, row.age) == ("Dog^AVeryGood", "F", "005Y")
    assert (row.manufacturer, row.station, row.institution, row.body_part) == (
        "FUJIFILM Corporation",
        "DEVO",
        "Veterinarian",
        "THORAX",
    )
    assert row.images == 1 and row.orthanc_id == _orthanc_id(orthanc, image.study_uid)
    assert (row.ai_status, row.triage_rank, row.was_read) == ("waiting", 3, False)


def test_the_modality_is_the_images_not_the_seg_or_sr_beside_them(
    orthanc: OrthancConnection, shared_data: Path, factory: sessionmaker[Session]
) -> None:
    follow_from_now(orthanc, factory)
    paths = sorted((shared_data / "dicom" / "ct_3slice").glob("*.dcm"))
    datasets = renumbered([*paths, shared_data / "dicom" / "ct_3slice_seg" / "liver_seg.dcm"])
    for dataset in datasets:
        dataset.PatientID = "IDX-SEG"
    _store(orthanc, datasets)
    catch_up(orthanc, factory)
    row = _indexed(factory, str(datasets[0].StudyInstanceUID))
    assert row is not None
    assert row.modalities == "CT"  # the SEG (an AI result) is not an image of the study
    assert row.images == 3
    # An SR (our TID 1500 results) likewise; a study of nothing but SR still says what it holds.
    series = [{"MainDicomTags": {"Modality": m}, "Instances": ["a"]} for m in ("CR", "SR", "SEG")]
    assert record_of("x", {}, series, {}).modalities == "CR"
    assert record_of("x", {}, series[1:2], {}).modalities == "SR"


def test_a_study_deleted_from_orthanc_leaves_the_index(
    orthanc: OrthancConnection, shared_data: Path, factory: sessionmaker[Session]
) -> None:
    catch_up(orthanc, factory)  # the whole archive indexed, as in use: deletions are found by count
    kept = store_chest_image(orthanc, shared_data, "20240302", "IDX-DEL")
    deleted = store_chest_image(orthanc, shared_data, "20240302", "IDX-DEL")
    catch_up(orthanc, factory)
    assert _indexed(factory, deleted.study_uid) is not None
    with orthanc.client() as client:
        client.delete(f"/studies/{_orthanc_id(orthanc, deleted.study_uid)}").raise_for_status()
    catch_up(orthanc, factory)
    assert _indexed(factory, deleted.study_uid) is None
    assert _indexed(factory, kept.study_uid) is not None


def test_a_study_whose_patient_is_deleted_leaves_the_index(
    orthanc: OrthancConnection, shared_data: Path, factory: sessionmaker[Session]
) -> None:
    catch_up(orthanc, factory)
    patient = f"IDX-PAT-{generate_uid()[-8:]}"
    first = store_chest_image(orthanc, shared_data, "20240303", patient)
    second = store_chest_image(orthanc, shared_data, "20240304", patient)
    catch_up(orthanc, factory)
    with orthanc.client() as client:
        patient_id = client.get(f"/studies/{_orthanc_id(orthanc, first.study_uid)}").json()["ParentPatient"]
        client.delete(f"/patients/{patient_id}").raise_for_status()
    catch_up(orthanc, factory)
    assert _indexed(factory, first.study_uid) is None and _indexed(factory, second.study_uid) is None


def test_a_study_stored_while_the_follower_was_stopped_is_indexed_when_it_starts_again(
    orthanc: OrthancConnection, shared_data: Path, factory: sessionmaker[Session]
) -> None:
    follow_from_now(orthanc, factory)
    with study_follower.in_background(orthanc, factory):
        arrived = store_chest_image(orthanc, shared_data, "20240305", "IDX-RUN")
        _wait_for(lambda: _indexed(factory, arrived.study_uid) is not None)
    # The platform is down: studies keep arriving in Orthanc.
    while_down = store_chest_image(orthanc, shared_data, "20240306", "IDX-DOWN")
    time.sleep(0.6)  # more than a poll: nothing follows now
    assert _indexed(factory, while_down.study_uid) is None
    with study_follower.in_background(orthanc, factory):
        _wait_for(lambda: _indexed(factory, while_down.study_uid) is not None)


def test_a_first_run_indexes_every_study_orthanc_already_holds(
    orthanc: OrthancConnection, shared_data: Path, factory: sessionmaker[Session]
) -> None:
    before = store_chest_image(orthanc, shared_data, "20240307", "IDX-BACKFILL")
    with OrthancRest(orthanc) as rest:
        last = rest.last_change()
    archive = InferenceArchive(orthanc)
    try:
        study_follower.follow(archive, factory)  # no cursor yet: the backfill
    finally:
        archive.close()
    with orthanc.client() as client:
        in_orthanc = set(client.get("/studies").json())
    with factory() as db:
        assert set(db.scalars(select(IndexedStudy.orthanc_id))) == in_orthanc
        cursor = db.get(ChangeCursor, study_follower.CURSOR_NAME)
        assert cursor is not None and cursor.last_seq == last  # what changes meanwhile is read again
    assert _indexed(factory, before.study_uid) is not None


def _wait_for(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not indexed in time"
        time.sleep(0.05)
