"""The platform's own SR and SEG (AI results, readers' feedback) are not news to the watcher: no model is
asked to read them and they are never listed as series no model accepts, even when the version that wrote
them has left the catalog. Another vendor's SR still is. Real Orthanc, real database."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference.archive import InferenceArchive
from inference.own_objects import is_own_object
from inference.router import UnroutedSeries
from inference.watcher import CURSOR_NAME, ChangeCursor, poll
from openaim.db import transaction
from orthanc import OrthancConnection
from orthanc.rest import OrthancRest
from tests.viewer.ai_fixtures import store_chest_image, store_result_object

OURS = "1.2.826.0.1.3680043.10.1234.7"


def test_ours_by_device_uid_or_by_our_series_number_and_description() -> None:
    equipment = {"ContributingEquipmentSequence": [{"DeviceUID": OURS}]}
    assert is_own_object({"Modality": "SR", **equipment}, {OURS})
    assert is_own_object(
        {"Modality": "SEG", "SeriesNumber": "9902", "SeriesDescription": "AI heatmaps: x"}, set()
    )
    assert is_own_object(
        {"Modality": "SR", "SeriesNumber": " 9901", "SeriesDescription": "AI results: x"}, set()
    )
    assert is_own_object(
        {"Modality": "SR", "SeriesNumber": "9903", "SeriesDescription": "AI feedback"}, set()
    )
    # another vendor's: another device, our number with another description, our description elsewhere
    assert not is_own_object(
        {"Modality": "SR", "ContributingEquipmentSequence": [{"DeviceUID": "1.9"}]}, {OURS}
    )
    assert not is_own_object(
        {"Modality": "SR", "SeriesNumber": "9901", "SeriesDescription": "CAD report"}, set()
    )
    assert not is_own_object(
        {"Modality": "SR", "SeriesNumber": "2", "SeriesDescription": "AI results: x"}, set()
    )
    # never an image, whatever it says
    assert not is_own_object(
        {"Modality": "DX", "SeriesNumber": "9901", "SeriesDescription": "AI results: x"}, set()
    )
    assert not is_own_object({"Modality": "SR", "SeriesNumber": "n/a"}, set())


def test_the_watcher_lists_a_vendors_sr_as_unrouted_but_never_ours(
    orthanc: OrthancConnection, shared_data: Path, factory: sessionmaker[Session]
) -> None:
    with OrthancRest(orthanc) as rest:
        last = rest.last_change()
    image = store_chest_image(orthanc, shared_data, "20240911", "OWN-OBJECTS")
    gone_version = store_result_object(orthanc, image, "SR", "AI results: retired model", "1.2.99.1", 9901)
    heatmaps = store_result_object(orthanc, image, "SEG", "AI heatmaps: retired model", "", 9902)
    feedback = store_result_object(orthanc, image, "SR", "AI feedback", "", 9903)
    vendor = store_result_object(orthanc, image, "SR", "Vendor CAD report", "1.2.99.2", 5)
    with transaction(factory) as db:
        db.add(ChangeCursor(name=CURSOR_NAME, last_seq=last))
        # listed before the platform recognised its own objects without their version in the catalog
        db.add(UnroutedSeries(series_uid=gone_version, study_uid=image.study_uid, reason="Modality is SR"))

    archive = InferenceArchive(orthanc)
    try:
        deadline = time.monotonic() + 20
        while vendor not in _unrouted(factory):  # the study becomes stable after StableAge
            assert time.monotonic() < deadline, "the study never became stable"
            poll(archive, factory, lambda db: [])
            time.sleep(0.2)
    finally:
        archive.close()

    unrouted = _unrouted(factory)
    assert vendor in unrouted and image.series_uid in unrouted
    assert not {gone_version, heatmaps, feedback} & unrouted


def _unrouted(factory: sessionmaker[Session]) -> set[str]:
    with factory() as db:
        return set(db.scalars(select(UnroutedSeries.series_uid)))
