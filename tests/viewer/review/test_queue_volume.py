"""The review queue and "My feedback" a page at a time (issue 14), on a small version of the bench's volume
(bench/feedback_volume.py) in a real database, SQLite and PostgreSQL: every page together is exactly the
queue that a plain reading of every row gives, in the same order, under every filter; the pages follow
each other through the app; and on SQLite no page query reads the whole feedback table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from bench.feedback_volume import Volume, fill
from openaim.settings import Settings
from tests.viewer.conftest import sign_in
from viewer.feedback.my_feedback import PAGE_ROWS, history_page
from viewer.feedback.records import Feedback, Kind, Verdict, reasons_of
from viewer.review.queue import PAGE_SIZE, QueueFilters, filter_choices, review_queue
from viewer.review.records import ReviewCase, ReviewDecision

ROWS = 2500


@pytest.fixture
def volume(factory: sessionmaker[Session], database_url: str) -> Volume:
    return fill(database_url, ROWS)


def expected_queue(db: Session, filters: QueueFilters) -> list[tuple[str, list[int]]]:
    """The queue read the plain way: every row, the newest version of each target, grouped by study in
    the order of each study's oldest discrepancy (as the queue was before issue 14)."""
    rows = sorted(db.scalars(select(Feedback)), key=lambda row: (row.created_at, row.id))
    newest: dict[tuple[int, str, str], int] = {}
    for row in rows:
        key = (row.user_id, row.study_uid, row.target)
        newest[key] = max(newest.get(key, 0), row.version)
    decided = set(db.scalars(select(ReviewCase.study_uid).join(ReviewDecision)))
    start = datetime.combine(filters.date_from, time(), UTC) if filters.date_from else None
    end = datetime.combine(filters.date_to + timedelta(days=1), time(), UTC) if filters.date_to else None
    by_study: dict[str, list[int]] = {}
    for row in rows:
        discrepancy = (
            row.verdict == Verdict.DISAGREE.value
            or row.kind == Kind.MISSED.value
            or row.triage_correct is False
            or row.review_requested
        )
        wanted = (
            discrepancy
            and row.version == newest[(row.user_id, row.study_uid, row.target)]
            and (not filters.model or row.model_id == filters.model)
            and (not filters.finding or row.finding_label == filters.finding)
            and (start is None or row.created_at >= start)
            and (end is None or row.created_at < end)
            and (not filters.reason or filters.reason in reasons_of(row))
            and (filters.state != "open" or row.study_uid not in decided)
            and (filters.state != "decided" or row.study_uid in decided)
        )
        if wanted:
            by_study.setdefault(row.study_uid, []).append(row.id)
    return list(by_study.items())


def paged_queue(db: Session, filters: QueueFilters, size: int) -> list[tuple[str, list[int]]]:
    found: list[tuple[str, list[int]]] = []
    after = None
    while True:
        page = review_queue(db, filters, after, size)
        assert len(page.cases) <= size
        found += [(case.study_uid, [item.feedback_id for item in case.discrepancies]) for case in page.cases]
        if page.next_after is None:
            return found
        assert len(page.cases) == size, "a page before the last one is full"
        after = page.next_after


def filter_cases(volume: Volume) -> list[QueueFilters]:
    middle = (datetime.now(UTC) - timedelta(days=365)).date()
    cases = [
        QueueFilters(),
        QueueFilters(model=volume.busiest_model),
        QueueFilters(model=volume.rarest_model),
        QueueFilters(model="no.such-model"),
        QueueFilters(finding="Pneumothorax"),
        QueueFilters(date_from=middle),
        QueueFilters(date_to=middle),
        QueueFilters(date_from=middle, date_to=middle + timedelta(days=60)),
        QueueFilters(state="open"),
        QueueFilters(state="decided"),
        QueueFilters(model=volume.busiest_model, reason="disagree", state="open"),
    ]
    reasons = ("false_positive_artefact", "wrong_location", "false_negative", "disagree", "triage_wrong")
    return cases + [QueueFilters(reason=reason) for reason in (*reasons, "review_requested")]


def test_the_pages_together_are_the_whole_queue_in_order(
    factory: sessionmaker[Session], volume: Volume
) -> None:
    with factory() as db:
        for filters in filter_cases(volume):
            expected = expected_queue(db, filters)
            assert paged_queue(db, filters, size=40) == expected, filters
        assert len(expected_queue(db, QueueFilters())) > 3 * 40, "the volume gives several pages"
        assert expected_queue(db, QueueFilters(state="decided")), "some studies were decided"


def test_filter_menus_list_every_model_and_finding(factory: sessionmaker[Session], volume: Volume) -> None:
    with factory() as db:
        models = sorted({row for row in db.scalars(select(Feedback.model_id).distinct()) if row})
        labels = sorted({row for row in db.scalars(select(Feedback.finding_label).distinct()) if row})
        assert filter_choices(db) == (models, labels)
        assert volume.busiest_model in models and volume.rarest_model in models


def test_history_pages_are_every_row_newest_first(factory: sessionmaker[Session], volume: Volume) -> None:
    with factory() as db:
        for user_id in (None, volume.readers[0]):
            query = select(Feedback).where(Feedback.user_id == user_id) if user_id else select(Feedback)
            expected = [row.id for row in sorted(db.scalars(query), key=lambda r: (r.created_at, r.id))][::-1]
            found: list[int] = []
            before = None
            while True:
                rows = history_page(db, user_id, before)
                found += [row[0].id for row in rows[:PAGE_ROWS]]
                if len(rows) <= PAGE_ROWS:
                    break
                before = rows[PAGE_ROWS - 1][0].id
            assert found == expected


# --- no page reads the whole table (SQLite's plans; PostgreSQL's depend on its statistics) ------------


@pytest.fixture
def statements(factory: sessionmaker[Session]) -> Iterator[list[tuple[str, Any]]]:
    engine = factory.kw["bind"]
    assert isinstance(engine, Engine)
    seen: list[tuple[str, Any]] = []

    def capture(_conn: object, _cursor: object, statement: str, parameters: Any, *_: object) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    yield seen
    event.remove(engine, "before_cursor_execute", capture)


def test_no_page_query_reads_the_whole_feedback_table(
    factory: sessionmaker[Session], volume: Volume, database_url: str, statements: list[tuple[str, Any]]
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("query plans checked on SQLite; PostgreSQL's depend on table statistics (see the bench)")
    with factory() as db:
        page = review_queue(db, QueueFilters(model=volume.busiest_model), size=10)
        review_queue(db, QueueFilters(), page.next_after, size=10)
        review_queue(db, QueueFilters(state="decided", reason="disagree"), size=10)
        filter_choices(db)
        history_page(db, None)
        history_page(db, volume.readers[0], history_page(db, volume.readers[0])[-1][0].id)
        captured = list(statements)
        for statement, parameters in captured:
            if "feedback" not in statement:
                continue
            plan = [
                row[3]
                for row in db.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            ]
            scans = [step for step in plan if re.match(r"SCAN feedback\b", step)]
            # A scan of feedback is only allowed as an ordered walk along an index that a LIMIT stops.
            ordered_walk = "LIMIT" in statement and not any("TEMP B-TREE" in step for step in plan)
            assert not scans or (ordered_walk and all("USING INDEX" in step for step in scans)), (
                statement,
                plan,
            )


# --- through the app ------------------------------------------------------------------------------------


def test_the_queue_and_the_history_page_through_the_app(
    client: TestClient, db: sessionmaker[Session], settings: Settings
) -> None:
    fill(settings.resolved_database_url, 1500)
    with db() as session:
        expected = [study for study, _ in expected_queue(session, QueueFilters())]
        newest_first = list(
            session.scalars(select(Feedback.id).order_by(Feedback.created_at.desc(), Feedback.id.desc()))
        )
    assert len(expected) > PAGE_SIZE
    sign_in(client, "admin")
    shown: list[str] = []
    url: str | None = "/review"
    while url:
        page = client.get(url, headers={"Accept": "text/html"}).text
        studies = list(dict.fromkeys(re.findall(r'<tr data-study-uid="([0-9.]+)"', page)))
        assert len(studies) <= PAGE_SIZE
        shown += studies
        found = re.search(r'<a href="([^"]+)" rel="next">', page)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert shown == expected
    rows: list[int] = []
    url = "/my/feedback"
    while url:
        page = client.get(url).text
        rows += [int(value) for value in re.findall(r'<tr data-feedback-id="(\d+)"', page)]
        found = re.search(r'<a href="([^"]+)" rel="next">', page)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert rows == newest_first
