"""Benchmark: the review queue and "My feedback" at a million feedback rows, before and after issue 14, on
SQLite and on PostgreSQL, against a goal of 300 ms.

For each database: migrate a fresh one to the newest revision and undo 0007_feedback_query_indexes alone
(its downgrade: the feedback indexes as they were), fill it with ``--rows`` feedback rows as a reading
room makes them (bench/feedback_volume.py: readers, studies, models, edits, past meetings), time the old
queries (bench/feedback_queries_before.py, the code as it was), then run the migration's upgrade (its own
time is reported: it builds the indexes) and time the new code (viewer/review/queue.py,
viewer/feedback/my_feedback.py) on the same rows. Each time is the
median of ``--repeat`` runs after one warm-up, in this process, on one connection: the database work of
the page (the queue page: the filter menus, the page of cases, their decisions), not the HTML.

The first page of the new queue must list the same studies, in the same order, as the first 50 of the old
one (checked here wherever the old one answers). Peers, measured in the same run on the same rows: one
study's current feedback (the AI panel's query, indexed from the start) and a count of every feedback row
(what an "N of M" total would cost; the new pages say "next" instead).

PostgreSQL: a new database on the server ``--postgres-url`` names, dropped afterwards (see
bench/bench_feedback.py's ``fresh_postgres``); without a URL the PostgreSQL rows say why they were skipped.
Usage: .venv/bin/python -m bench.bench_feedback_queries [--rows 1000000] [--repeat 5]
                                                  [--postgres-url URL] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from alembic import command
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bench import feedback_queries_before as before
from bench.bench_feedback import fresh_postgres
from bench.feedback_volume import Volume, fill
from openaim.db import alembic_config, make_engine, session_factory
from viewer.feedback import records
from viewer.feedback.my_feedback import history_page
from viewer.feedback.records import Feedback
from viewer.review.queue import PAGE_SIZE, QueueFilters, filter_choices, review_queue

GOAL_MS = 300.0
INDEXES_REVISION = "0007"


@dataclass
class Timing:
    label: str
    before_ms: float | None = None  # None: not measured (a query that is new)
    after_ms: float | None = None
    before_problem: str = ""  # the old query's error, where it failed
    peer: bool = False


@dataclass
class Run:
    database: str
    rows: int = 0
    studies: int = 0
    fill_s: float = 0.0
    migration_s: float = 0.0
    same_first_page: bool | None = None
    timings: list[Timing] = field(default_factory=list)
    skipped: str = ""


def median_ms(work: Callable[[], object], repeat: int) -> float:
    work()  # warm-up: the page cache and the statement cache, as a second visitor finds them
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def indexes_migration(engine: Engine, step: str) -> float:
    """Run 0007_feedback_query_indexes' ``upgrade`` or ``downgrade`` alone; its time in seconds. The rest
    of the schema stays at the newest revision (later migrations may change other tables)."""
    script = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(hide_password=False)))
    module = script.get_revision(INDEXES_REVISION).module
    start = time.perf_counter()
    with engine.begin() as connection, Operations.context(MigrationContext.configure(connection)):
        getattr(module, step)()
    return time.perf_counter() - start


def analyse(url: str) -> None:
    """PostgreSQL: statistics now, as autovacuum would give them after a bulk load (SQLite has none by
    default and the platform never runs ANALYZE there)."""
    if url.startswith("postgresql"):
        engine = make_engine(url)
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
        engine.dispose()


def queue_page(db: Session, filters: QueueFilters, after: int | None = None) -> list[str]:
    """What the queue page asks of the database: the filter menus and one page of cases."""
    filter_choices(db)
    return [case.study_uid for case in review_queue(db, filters, after).cases]


def cursor_of_page(db: Session, filters: QueueFilters, page: int) -> int | None:
    """The ``after`` that opens page ``page`` (a reviewer who pressed "next" page - 1 times)."""
    after = None
    for _ in range(page - 1):
        after = review_queue(db, filters, after).next_after
    return after


def scenarios(volume: Volume) -> list[tuple[str, QueueFilters | None, int | None, int]]:
    """(label, queue filters or None for "My feedback", whose feedback, page): the issue's three first."""
    month_ago = (datetime.now(UTC) - timedelta(days=30)).date()
    return [
        ("review queue", QueueFilters(), None, 1),
        ("review queue, one model", QueueFilters(model=volume.busiest_model), None, 1),
        ("My feedback, admin (everyone)", None, None, 1),
        ("My feedback, one reader", None, volume.readers[0], 1),
        ("review queue, page 5", QueueFilters(), None, 5),
        ("review queue, rarest model", QueueFilters(model=volume.rarest_model), None, 1),
        ("review queue, one finding", QueueFilters(finding="Hernia"), None, 1),
        ("review queue, reason: missed", QueueFilters(reason="false_negative"), None, 1),
        ("review queue, reason: disagree", QueueFilters(reason="disagree"), None, 1),
        ("review queue, last 30 days", QueueFilters(date_from=month_ago), None, 1),
        ("review queue, decided", QueueFilters(state="decided"), None, 1),
        ("review queue, open, one model", QueueFilters(model=volume.busiest_model, state="open"), None, 1),
    ]


def measure_before(db: Session, run: Run, volume: Volume, repeat: int) -> dict[str, list[str]]:
    """The old code on the old schema; returns each queue's studies in order, for the comparison."""
    listed: dict[str, list[str]] = {}
    for label, filters, whose, _pages in scenarios(volume)[:4]:
        timing = Timing(label)
        run.timings.append(timing)
        if filters is None:
            timing.before_ms = median_ms(partial(before.my_feedback_page, db, whose), repeat)
            continue
        start = time.perf_counter()
        try:
            listed[label] = before.review_queue_page(db, filters)
        except DBAPIError as error:  # PostgreSQL: the old decisions query binds every study in the queue
            db.rollback()
            timing.before_ms = (time.perf_counter() - start) * 1000
            timing.before_problem = str(error.orig or error).strip().splitlines()[0][:100]
            continue
        timing.before_ms = median_ms(partial(before.review_queue_page, db, filters), repeat - 1)
    return listed


def measure_after(db: Session, run: Run, volume: Volume, repeat: int, listed: dict[str, list[str]]) -> None:
    known = {timing.label: timing for timing in run.timings}
    for label, filters, whose, pages in scenarios(volume):
        timing = known.get(label) or Timing(label)
        if label not in known:
            run.timings.append(timing)
        if filters is None:
            timing.after_ms = median_ms(partial(history_page, db, whose), repeat)
            continue
        after = cursor_of_page(db, filters, pages)
        timing.after_ms = median_ms(partial(queue_page, db, filters, after), repeat)
    if "review queue" in listed:
        run.same_first_page = queue_page(db, QueueFilters()) == listed["review queue"][:PAGE_SIZE]
    peers = [
        ("peer: one study's current feedback (AI panel)", lambda: records.current(db, volume.sample_study)),
        ("peer: count(*) of all feedback (an 'of M')", lambda: db.scalar(select(func.count(Feedback.id)))),
    ]
    for label, work in peers:
        run.timings.append(Timing(label, after_ms=median_ms(work, repeat), peer=True))


def measure(database: str, url: str, rows: int, repeat: int) -> Run:
    run = Run(database)
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    factory = session_factory(engine)
    try:
        indexes_migration(engine, "downgrade")  # the feedback table's indexes as they were
        start = time.perf_counter()
        volume = fill(url, rows)
        run.fill_s, run.rows, run.studies = time.perf_counter() - start, volume.rows, volume.studies
        analyse(url)
        with factory() as db:
            listed = measure_before(db, run, volume, max(3, repeat // 2))  # the old queries take seconds
        run.migration_s = indexes_migration(engine, "upgrade")
        analyse(url)
        with factory() as db:
            measure_after(db, run, volume, repeat, listed)
    finally:
        engine.dispose()
    return run


def measure_postgres(url: str | None, rows: int, repeat: int) -> Run:
    if not url:
        return Run("PostgreSQL", skipped="skipped: no --postgres-url nor $OPENAIM_BENCH_POSTGRES_URL")
    try:
        with fresh_postgres(url) as bench_url:
            return measure("PostgreSQL", bench_url, rows, repeat)
    except DBAPIError as error:
        if error.connection_invalidated or "connect" in str(error).lower():
            return Run("PostgreSQL", skipped=f"skipped: {str(error.orig or error).strip().splitlines()[0]}")
        raise


def run_all(rows: int, repeat: int, postgres_url: str | None) -> list[Run]:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = measure("SQLite", f"sqlite:///{Path(tmp) / 'openaim.db'}", rows, repeat)
    return [sqlite, measure_postgres(postgres_url, rows, repeat)]


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def table(runs: list[Run]) -> str:
    lines = [
        "| database | query (the page's database work) | before ms | after ms | goal ms | after meets goal |",
        "|---|---|--:|--:|--:|---|",
    ]
    for run in runs:
        if run.skipped:
            lines.append(f"| {run.database} | {run.skipped} | | | | |")
            continue
        for timing in run.timings:
            before_cell = _ms(timing.before_ms)
            if timing.before_problem:
                before_cell = f"fails after {_ms(timing.before_ms)} ({timing.before_problem})"
            met = "peer" if timing.peer else ("yes" if (timing.after_ms or 0) < GOAL_MS else "NO")
            goal = "" if timing.peer else f"{GOAL_MS:.0f}"
            after_cell = _ms(timing.after_ms)
            lines.append(
                f"| {run.database} | {timing.label} | {before_cell} | {after_cell} | {goal} | {met} |"
            )
    return "\n".join(lines)


def details(runs: list[Run]) -> str:
    lines = []
    for run in runs:
        if run.skipped:
            continue
        same = {None: "not compared (the old queue failed)", True: "yes", False: "NO"}[run.same_first_page]
        lines.append(
            f"{run.database}: {run.rows:,} feedback rows over {run.studies:,} studies, filled in "
            f"{run.fill_s:.0f} s; migration 0007 (the indexes) took {run.migration_s:.1f} s; "
            f"first queue page lists the old queue's first {PAGE_SIZE} studies in the same order: {same}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OPENAIM_BENCH_POSTGRES_URL"),
        help="a PostgreSQL server to create a scratch database on (default: $OPENAIM_BENCH_POSTGRES_URL)",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    load_before = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    runs = run_all(args.rows, args.repeat, args.postgres_url)
    print(
        f"\nFeedback queries at {args.rows:,} rows (median of {args.repeat}; load average: {load_before})\n"
    )
    print(table(runs))
    print()
    print(details(runs))
    if args.json:
        record: dict[str, Any] = {"goal_ms": GOAL_MS, "runs": [asdict(run) for run in runs]}
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
