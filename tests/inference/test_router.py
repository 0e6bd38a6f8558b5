"""A series goes to every enabled model whose selectors all match; when none does, the reason is kept."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference.jobs import Job
from inference.manifest import Selector
from inference.router import Candidate, UnroutedSeries, mismatch, route_series
from openaim.db import transaction

FRONTAL_CHEST = (
    Selector(keyword="Modality", values=["CR", "DX"]),
    Selector(keyword="BodyPartExamined", values=["CHEST"]),
    Selector(keyword="ViewPosition", values=["PA", "AP"]),
)
CHEST_PA = {"Modality": "DX", "BodyPartExamined": "CHEST", "ViewPosition": "PA"}


def test_every_selector_must_match_one_of_its_values() -> None:
    assert mismatch(FRONTAL_CHEST, CHEST_PA) is None
    assert mismatch(FRONTAL_CHEST, CHEST_PA | {"ViewPosition": "LL"}) == "ViewPosition is LL (expects PA, AP)"
    assert mismatch(FRONTAL_CHEST, CHEST_PA | {"Modality": "CT"}) == "Modality is CT (expects CR, DX)"
    missing = {"Modality": "DX", "BodyPartExamined": "CHEST"}
    assert mismatch(FRONTAL_CHEST, missing) == "ViewPosition is missing (expects PA, AP)"


def test_multi_valued_attributes_match_when_any_value_does() -> None:
    selectors = (Selector(keyword="ImageType", values=["PRIMARY"]),)
    assert mismatch(selectors, {"ImageType": "ORIGINAL\\PRIMARY"}) is None
    assert mismatch(selectors, {"ImageType": "DERIVED\\SECONDARY"}) is not None


def test_a_series_no_model_accepts_is_recorded_with_each_models_reason(
    factory: sessionmaker[Session],
) -> None:
    candidates = [Candidate(1, "demo-cxr 1.0.0", FRONTAL_CHEST)]
    with transaction(factory) as db:
        accepted = route_series(db, "1.2", "1.2.3", {"Modality": "CT"}, candidates)
    assert accepted == []
    with factory() as db:
        row = db.get(UnroutedSeries, "1.2.3")
        assert row is not None
        assert row.reason == "demo-cxr 1.0.0: Modality is CT (expects CR, DX)"
        assert db.scalars(select(Job)).all() == []


def test_with_no_model_enabled_the_reason_says_so(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as db:
        route_series(db, "1.2", "1.2.3", CHEST_PA, [])
    with factory() as db:
        row = db.get(UnroutedSeries, "1.2.3")
        assert row is not None and row.reason == "no model is enabled"
