"""A study index at volume, in the project's own schema, for bench/bench_worklist.py and its test.

Studies as a hospital archive holds them: ten years of dates, about two studies a patient, chest X-rays
(CR, DX) about half, then CT, MR, US, MG, a few PET/CT (two image modalities). A clinical chest model has
run on the chest X-rays (most done; some queued, running, failed or not applicable), flagging about 2% urgent
and 12% priority; a shadow model (its flags must never show) ran on a tenth of them; the other studies were
routed nowhere (unrouted) or wait. Readers have read most of the older ones.

Inserted in bulk (COPY on PostgreSQL, executemany on SQLite) with the worklist triggers off, then every row's
worklist state computed at once by the very statement the triggers run (migration 0006's REFRESH, over all
rows), and the triggers put back: a million rows through the triggers one by one would take far longer.
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import ModuleType
from typing import Any

from sqlalchemy import Connection, Table, insert, text

from inference.catalog import Mode, ModelVersion
from inference.jobs import Job
from inference.results import InferenceResult
from inference.router import UnroutedSeries
from inference.study_index import UNDATED, IndexedStudy
from openaim.db import MIGRATIONS_DIR, make_engine, session_factory, transaction
from viewer.access.users import Role, add_user
from viewer.reading.reads import StudyRead

CHUNK = 50_000
FIRST_DAY = date(2016, 1, 1)
DAYS = 3650
MODALITIES = (("CR", 0.33), ("DX", 0.20), ("CT", 0.20), ("MR", 0.12), ("US", 0.08), ("MG", 0.06))
PET_CT = 0.01  # "CT\PT"
JOB_STATES = (
    ("done", 0.93),
    ("queued", 0.025),
    ("running", 0.005),
    ("failed", 0.01),
    ("not_applicable", 0.03),
)
TRIAGE = (("urgent", 0.02), ("priority", 0.12), ("routine", 0.86))
READ_SHARE = 0.6


@dataclass(frozen=True)
class Volume:
    studies: int
    reader_id: int
    sample_patient: str  # a patient with studies, for the search case
    sample_accession: str


def study_uid(number: int) -> str:
    return f"1.2.826.0.1.3680043.10.998.{number}"


def fill(url: str, studies: int, seed: int = 14) -> Volume:
    """``studies`` index rows with their jobs, results, unrouted series and reads into the (migrated,
    empty) database at ``url``; the worklist state of every row as the triggers keep it."""
    rng = random.Random(seed)
    reader_id, clinical, shadow = _add_people_and_models(url)
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            triggers = _migration()
            _triggers_off(connection, triggers)
            job_id = 0
            for start in range(0, studies, CHUNK):
                made = [_study(rng, number) for number in range(start, min(start + CHUNK, studies))]
                jobs: list[dict[str, Any]] = []
                results: list[dict[str, Any]] = []
                unrouted: list[dict[str, Any]] = []
                for number, row in made:
                    job_id = _ai(rng, number, row, clinical, shadow, job_id, jobs, results, unrouted)
                reads = [_read(reader_id, number, row) for number, row in made if rng.random() < READ_SHARE]
                _bulk(connection, IndexedStudy.__table__, [row for _number, row in made])  # type: ignore[arg-type]
                _bulk(connection, Job.__table__, jobs)  # type: ignore[arg-type]
                _bulk(connection, InferenceResult.__table__, results)  # type: ignore[arg-type]
                _bulk(connection, UnroutedSeries.__table__, unrouted)  # type: ignore[arg-type]
                _bulk(connection, StudyRead.__table__, reads)  # type: ignore[arg-type]
            if connection.dialect.name == "postgresql":
                connection.execute(text("ANALYZE"))  # the statement's subqueries planned on real numbers
            for statement in triggers.REFRESH.format(where="1 = 1").split(";"):  # two UPDATEs
                if statement.strip():
                    connection.execute(text(statement))
            _triggers_on(connection, triggers)
            if connection.dialect.name == "postgresql":  # ids were given: move the sequences past them
                for table in ("studies", "inference_jobs", "inference_results", "study_reads"):
                    connection.execute(
                        text(f"SELECT setval('{table}_id_seq', (SELECT coalesce(max(id), 1) FROM {table}))")  # noqa: S608
                    )
        if engine.dialect.name == "postgresql":
            # As autovacuum would after a load this size: statistics, and the visibility map that lets an
            # index-only scan (the worklist's ids of a page) leave the table unread. VACUUM needs autocommit.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()
    return Volume(studies, reader_id, "P0000010", "A00000020")


def _migration() -> ModuleType:
    """Migration 0006, which holds the triggers and the statement they run."""
    path = next((MIGRATIONS_DIR / "versions").glob("0006_study_index.py"))
    spec = importlib.util.spec_from_file_location("study_index_migration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _triggers_off(connection: Connection, migration: ModuleType) -> None:
    for table, event, _where in migration.SOURCES:
        name = f"studies_refresh_{table}_{event.lower()}"
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {name}"))
        else:
            connection.execute(text(f"DROP TRIGGER {name}"))


def _triggers_on(connection: Connection, migration: ModuleType) -> None:
    if connection.dialect.name == "postgresql":
        for table, event, _where in migration.SOURCES:
            connection.execute(
                text(f"ALTER TABLE {table} ENABLE TRIGGER studies_refresh_{table}_{event.lower()}")
            )
        return
    for statement in migration._sqlite_triggers():
        connection.execute(text(statement))


def _add_people_and_models(url: str) -> tuple[int, int, int]:
    """A reader (who has read studies), a clinical and a shadow model version: (reader, clinical, shadow)."""
    engine = make_engine(url)
    try:
        with transaction(session_factory(engine)) as db:
            reader = add_user(db, "bench-worklist-reader", None, {Role.RADIOLOGIST})
            versions = [
                ModelVersion(
                    model_id=f"openaim.bench-worklist-{number}",
                    version="1.0.0",
                    name="Benchmark chest X-ray model",
                    vendor="openaim bench",
                    device_uid=f"1.2.826.0.1.3680043.10.998.0.{number}",
                    weights_sha256="0" * 64,
                    manifest_json="{}",
                    package_path="",
                    mode=mode.value,
                    installed_by="bench",
                )
                for number, mode in ((1, Mode.CLINICAL), (2, Mode.SHADOW))
            ]
            db.add_all(versions)
            db.flush()
            return reader.id, versions[0].id, versions[1].id
    finally:
        engine.dispose()


def _pick(rng: random.Random, shares: tuple[tuple[str, float], ...]) -> str:
    value = rng.random()
    for name, share in shares:
        value -= share
        if value < 0:
            return name
    return shares[-1][0]


def _study(rng: random.Random, number: int) -> tuple[int, dict[str, Any]]:
    day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
    study_date = day.strftime("%Y%m%d") if rng.random() > 0.001 else ""
    study_time = f"{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
    modalities = "CT\\PT" if rng.random() < PET_CT else _pick(rng, MODALITIES)
    chest = modalities in ("CR", "DX")
    return number, {
        "id": number + 1,
        "orthanc_id": f"{number:08x}-bench",
        "study_uid": study_uid(number),
        "patient_name": f"BENCH^PATIENT{number // 2}",
        "patient_id": f"P{number // 2:07d}",
        "accession": f"A{number:08d}",
        "study_date": study_date,
        "study_time": study_time,
        "waiting_since": (study_date or UNDATED) + study_time,
        "modalities": modalities,
        "description": "Chest PA" if chest else f"{modalities} study",
        "sex": rng.choice("FMO"),
        "age": f"{rng.randrange(1, 100):03d}Y",
        "manufacturer": rng.choice(("Vendor A", "Vendor B", "Vendor C")),
        "model": rng.choice(("Model 1", "Model 2")),
        "station": f"STATION{rng.randrange(20)}",
        "institution": "Bench Hospital",
        "view_position": rng.choice(("PA", "AP")) if chest else "",
        "body_part": "CHEST" if chest else "",
        "images": 1 if chest else rng.randrange(20, 400),
        "indexed_at": datetime.now(UTC),
        "triage_rank": 3,  # the REFRESH statement sets the worklist state afterwards
        "triage_failed": False,
        "ai_status": "waiting",
        "was_read": False,
    }


def _ai(
    rng: random.Random,
    number: int,
    row: dict[str, Any],
    clinical: int,
    shadow: int,
    job_id: int,
    jobs: list[dict[str, Any]],
    results: list[dict[str, Any]],
    unrouted: list[dict[str, Any]],
) -> int:
    """The jobs and results of one study (chest X-rays) or its unrouted series; returns the last job id."""
    uid, series = row["study_uid"], f"{row['study_uid']}.1"
    if row["modalities"] not in ("CR", "DX"):
        if rng.random() < 0.7:
            unrouted.append(
                {
                    "series_uid": series,
                    "study_uid": uid,
                    "reason": "no model takes it",
                    "decided_at": row["indexed_at"],
                }
            )
        return job_id
    for version, share in ((clinical, 1.0), (shadow, 0.1)):
        if rng.random() >= share:
            continue
        job_id += 1
        state = _pick(rng, JOB_STATES)
        jobs.append(
            {
                "id": job_id,
                "study_uid": uid,
                "series_uid": series,
                "model_version_id": version,
                "state": state,
                "attempts": 1,
                "reason": None,
                "created_at": row["indexed_at"],
                "next_attempt_at": row["indexed_at"],
                "lease_expires_at": None,
                "finished_at": None,
            }
        )
        if state in ("done", "failed"):
            results.append(
                {
                    "id": job_id,
                    "job_id": job_id,
                    "study_uid": uid,
                    "series_uid": series,
                    "sop_instance_uid": f"{series}.1",
                    "model_version_id": version,
                    "triage": "urgent" if version == shadow else _pick(rng, TRIAGE),
                    "sr_uid": f"{series}.2",
                    "seg_uid": None,
                    "created_at": row["indexed_at"],
                }
            )
    return job_id


def _read(reader_id: int, number: int, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": number + 1,
        "study_uid": row["study_uid"],
        "user_id": reader_id,
        "impression": "normal",
        "ai_visible": True,
        "created_at": row["indexed_at"],
    }


def _bulk(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        connection.execute(insert(table), rows)
        return
    columns = list(rows[0])
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(tuple(row[column] for column in columns))
