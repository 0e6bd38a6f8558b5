"""The worklist over a small version of the bench's study index (bench/worklist_volume.py) in a real
database, SQLite and PostgreSQL: every row's worklist state, as the triggers' statement keeps it, is what
the reading room's own rule (viewer/reading/study_status.py) says; the pages together are every matching
study once, in the order a plain sort of all of them gives, under every filter; and on SQLite no page is
sorted in a temporary table (the order comes from an index, whatever the archive's size)."""

from __future__ import annotations

from datetime import date
from fnmatch import fnmatchcase

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session, sessionmaker

from bench.worklist_volume import Volume, fill
from inference.study_index import IndexedStudy
from openaim.db import transaction
from viewer.access.users import find_user
from viewer.reading.reads import Impression, record_impression
from viewer.reading.study_status import AIStatus, Triage, study_statuses
from viewer.reading.worklist import PAGE_SIZE, WORKLIST_ORDER, Filters, find_page, status_of

STUDIES = 2500
FILTERS = [
    Filters(),
    Filters(flag=Triage.URGENT),
    Filters(flag=Triage.PRIORITY),
    Filters(ai=AIStatus.FAILED),
    Filters(read=False),
    Filters(modality="CT"),
    Filters(modality="PT"),  # only in "CT\PT" studies
    Filters(q="P0000010"),
    Filters(q="A0000002*"),
    Filters(date_from=date(2020, 1, 1), date_to=date(2020, 12, 31), read=True),
]


@pytest.fixture
def volume(factory: sessionmaker[Session], database_url: str) -> Volume:
    return fill(database_url, STUDIES)


def test_every_rows_worklist_state_is_the_reading_rooms_rule(
    factory: sessionmaker[Session], volume: Volume
) -> None:
    with factory() as db:
        rows = db.scalars(select(IndexedStudy)).all()
        assert len(rows) == STUDIES
        expected = study_statuses(db, [row.study_uid for row in rows])
    assert {row.study_uid: status_of(row) for row in rows} == expected
    flags = {status.triage for status in expected.values()}
    assert flags == set(Triage)  # the volume has every level, so the comparison means something


def test_pages_are_every_matching_study_once_in_worklist_order(
    factory: sessionmaker[Session], volume: Volume
) -> None:
    with factory() as db:
        everything = db.scalars(select(IndexedStudy)).all()
        for filters in FILTERS:
            plain = sorted(
                (row for row in everything if _keeps(filters, row)),
                key=lambda row: (row.triage_rank, row.waiting_since, row.id),
            )
            paged = []
            for number in range(1, max(1, -(-len(plain) // PAGE_SIZE)) + 1):
                page = find_page(db, filters, number)
                assert page.total == len(plain), filters
                paged += [entry.study.study_uid for entry in page.entries]
            assert paged == [row.study_uid for row in plain], filters
            assert plain or filters.q, f"{filters} matches nothing: the volume does not test it"


def _keeps(filters: Filters, row: IndexedStudy) -> bool:
    """The filters read plainly, in Python, one row at a time."""
    day = row.study_date
    return (
        (not filters.q or any(fnmatchcase(value, filters.q) for value in (row.patient_id, row.accession)))
        and (not filters.modality or filters.modality in row.modalities.split("\\"))
        and (filters.date_from is None or (day != "" and day >= filters.date_from.strftime("%Y%m%d")))
        and (filters.date_to is None or (day != "" and day <= filters.date_to.strftime("%Y%m%d")))
        and (filters.flag is None or row.triage_rank == filters.flag.rank)
        and (filters.ai is None or row.ai_status == filters.ai.value)
        and (filters.read is None or row.was_read is filters.read)
    )


def test_a_read_recorded_after_the_fill_still_reaches_the_row(
    factory: sessionmaker[Session], volume: Volume
) -> None:
    with transaction(factory) as db:
        unread = db.scalars(select(IndexedStudy).where(IndexedStudy.was_read.is_(False))).first()
        assert unread is not None
        reader = find_user(db, "bench-worklist-reader")
        assert reader is not None
        record_impression(db, reader, unread.study_uid, Impression.NORMAL, ai_visible=True)
    with factory() as db:
        assert db.get(IndexedStudy, unread.id).was_read  # type: ignore[union-attr]


def test_sqlite_pages_come_from_an_index_not_a_sort(factory: sessionmaker[Session], volume: Volume) -> None:
    with factory() as db:
        if db.get_bind().dialect.name != "sqlite":
            pytest.skip("SQLite's query plan; PostgreSQL is timed by bench/bench_worklist.py")
        for filters in (
            Filters(),
            Filters(flag=Triage.URGENT),
            Filters(ai=AIStatus.FAILED),
            Filters(read=False),
        ):
            query = (
                select(IndexedStudy).where(*filters.conditions(db)).order_by(*WORKLIST_ORDER).limit(PAGE_SIZE)
            )
            compiled = query.compile(db.get_bind(), compile_kwargs={"literal_binds": True})
            plan = " | ".join(row[-1] for row in db.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
            assert "TEMP B-TREE" not in plan, (filters, plan)


def test_postgresql_skips_to_the_middle_of_the_list_in_the_index_alone(
    factory: sessionmaker[Session], volume: Volume
) -> None:
    """The skipped rows of a page typed by number are ids read from the worklist index, not table rows
    (asking for whole rows read every skipped one: 2.8 s for the middle of a million)."""
    with factory() as db:
        engine = db.get_bind()
        if engine.dialect.name != "postgresql":
            pytest.skip("PostgreSQL's query plan; SQLite's is checked above")
        issued: list[tuple[str, object]] = []

        def keep(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
            issued.append((statement, parameters))

        event.listen(engine, "before_cursor_execute", keep)
        try:
            find_page(db, Filters(), -(-STUDIES // PAGE_SIZE) // 2)
        finally:
            event.remove(engine, "before_cursor_execute", keep)
        skipping = [(sql, params) for sql, params in issued if "OFFSET" in sql]
        assert skipping, issued
        sql, params = skipping[0]
        plan = " | ".join(row[0] for row in db.connection().exec_driver_sql(f"EXPLAIN {sql}", params))  # type: ignore[arg-type]
        assert "Index Only Scan" in plan, plan
        assert "Sort" not in plan, plan
