"""A feedback table at volume, in the project's own schema, for bench/bench_feedback_queries.py and its test.

Rows come as a reading room makes them, oldest first: a reader opens a study, gives a verdict on each AI
finding of one or two models (about one in six disagrees, mostly with a reason), says whether the triage
flag was right (one in ten: wrong; one in thirty asks for review), sometimes marks a missed finding, and
now and then edits a verdict a little later (a new version that points at the one before). Model use is
uneven (the busiest model gives a third of the rows), and past review meetings have decided some of the
studies that were in the queue. Every study is in the study index, as the archive's studies are (the
queue lists no other). Inserted in bulk (COPY on PostgreSQL, executemany on SQLite), not through
the API: a million saves through the app would take hours.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, MetaData, Table, insert, inspect, text

from inference.study_index import IndexedStudy
from openaim.db import make_engine
from viewer.access.users import Role
from viewer.review.records import Outcome

LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
MODELS = tuple((f"vendor{k}.cxr-{k}", f"1.{k}.0") for k in range(6))
MODEL_WEIGHTS = (0.35, 0.25, 0.15, 0.12, 0.08, 0.05)
REASONS = (
    "false_positive_artefact",
    "false_positive_normal_variant",
    "false_positive_other_finding",
    "wrong_location",
)
SPAN = timedelta(days=730)  # two years of feedback, ending now
REVIEWER = "bench-reviewer"
TABLES = ("users", "user_roles", "feedback", "review_meetings", "review_cases", "review_decisions")


@dataclass(frozen=True)
class Volume:
    """What was made: enough to ask the queries the bench times."""

    rows: int
    studies: int
    readers: list[int]  # user ids
    reviewer_id: int
    busiest_model: str
    rarest_model: str
    sample_study: str  # a study with feedback, for the one-study peer
    decided_studies: int


def study_uid(number: int) -> str:
    return f"1.2.826.0.1.3680043.10.999.{number}"


def fill(url: str, rows: int, seed: int = 14) -> Volume:
    """Add readers, ``rows`` feedback rows and past meetings to the (migrated, empty) database at ``url``.

    Written through the tables as the database has them (reflected), not the models: the bench fills a
    database migrated to an older revision than the models describe."""
    rng = random.Random(seed)
    readers = max(4, rows // 20_000)
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            metadata = MetaData()
            metadata.reflect(connection, only=TABLES)
            tables = metadata.tables
            reviewer_id = _add_users(connection, tables, readers)
            reader_ids = list(range(reviewer_id + 1, reviewer_id + 1 + readers))
            made = list(_feedback(rng, rows, reader_ids))
            _bulk_insert(connection, tables["feedback"], made)
            if connection.dialect.name == "postgresql":  # ids were given: move the sequence past them
                connection.execute(text("SELECT setval('feedback_id_seq', (SELECT max(id) FROM feedback))"))
            decided = _add_meetings(connection, tables, rng, made, reviewer_id)
            _index_studies(connection, sorted({row["study_uid"] for row in made}))
    finally:
        engine.dispose()
    studies = len({row["study_uid"] for row in made})
    return Volume(
        rows=len(made),
        studies=studies,
        readers=reader_ids,
        reviewer_id=reviewer_id,
        busiest_model=MODELS[0][0],
        rarest_model=MODELS[-1][0],
        sample_study=made[len(made) // 2]["study_uid"],
        decided_studies=decided,
    )


def _add_users(connection: Connection, tables: Mapping[str, Table], readers: int) -> int:
    """The reviewer (an admin too), then the readers, with consecutive ids; returns the reviewer's id.
    No passwords: the bench signs nobody in."""
    users: list[dict[str, Any]] = [{"username": REVIEWER, "display_name": "Bench Reviewer"}]
    users += [{"username": f"bench-reader{n:03d}", "display_name": f"Reader {n:03d}"} for n in range(readers)]
    now = datetime.now(UTC)
    for user in users:
        user |= {"password_hash": None, "active": True, "blinded_read": False, "created_at": now}
    connection.execute(insert(tables["users"]), users)
    found = connection.execute(text("SELECT id, username FROM users WHERE username LIKE 'bench-%'")).all()
    ids = {name: user_id for user_id, name in found}
    roles = [{"user_id": ids[REVIEWER], "role": role.value} for role in (Role.REVIEWER, Role.ADMIN)]
    roles += [{"user_id": ids[user["username"]], "role": Role.RADIOLOGIST.value} for user in users[1:]]
    connection.execute(insert(tables["user_roles"]), roles)
    reader_ids = sorted(ids[user["username"]] for user in users[1:])
    assert reader_ids == list(range(ids[REVIEWER] + 1, ids[REVIEWER] + 1 + readers)), "ids not consecutive"
    return ids[REVIEWER]


def _feedback(rng: random.Random, rows: int, readers: list[int]) -> Iterator[dict[str, Any]]:
    """``rows`` rows in the order they were saved, ids 1..rows, times spread evenly over SPAN."""
    start = datetime.now(UTC) - SPAN
    step = SPAN / rows
    made = 0
    study = 0
    while made < rows:
        study += 1
        uid = study_uid(study)
        for reader in rng.sample(readers, 1 if rng.random() < 0.8 else 2):
            for row in _one_read(rng, uid, reader):
                if made == rows:
                    return
                made += 1
                row["id"] = made
                row["created_at"] = start + step * made
                yield row


def _one_read(rng: random.Random, uid: str, reader: int) -> Iterator[dict[str, Any]]:
    """One reader's saves on one study: verdicts (and some edits), triage, now and then a missed finding."""
    models = rng.choices(range(len(MODELS)), MODEL_WEIGHTS, k=1 if rng.random() < 0.7 else 2)
    seconds = round(rng.uniform(20, 400), 1)
    for index in dict.fromkeys(models):
        model_id, version = MODELS[index]
        result = rng.randrange(10**9)
        for label in rng.sample(LABELS, 3):
            finding = f"finding-{rng.randrange(10**9)}"
            base = _row(rng, uid, reader, "finding", f"finding:{finding}", seconds)
            base |= {"result_id": f"platform-{result}", "finding_id": finding, "finding_label": label}
            base |= {"model_id": model_id, "model_version": version, "device_uid": f"2.25.{index + 1}"}
            first = base | _verdict(rng)
            yield first
            if rng.random() < 0.15:  # an edit: a new version of the same target
                yield (
                    first
                    | _verdict(rng)
                    | {"version": 2, "previous_id": "previous", "client_id": _client_id(rng)}
                )
    yield _row(rng, uid, reader, "study", "study", seconds) | {
        "triage_correct": rng.random() >= 0.10,
        "review_requested": rng.random() < 1 / 30,
    }
    if rng.random() < 0.05:
        mark = {"instance_uid": f"{uid}.1.1", "frame": 1, "box": [10, 12, 40, 44]}
        missed = _row(rng, uid, reader, "missed", f"missed:{uuid.UUID(int=rng.getrandbits(128))}", seconds)
        yield missed | {"reason": "false_negative", "mark_json": json.dumps(mark), "comment": "nodule RUL"}


def _row(rng: random.Random, uid: str, reader: int, kind: str, target: str, seconds: float) -> dict[str, Any]:
    return {
        "client_id": _client_id(rng),
        "user_id": reader,
        "study_uid": uid,
        "kind": kind,
        "target": target,
        "version": 1,
        "previous_id": None,
        "result_id": None,
        "finding_id": None,
        "finding_label": None,
        "verdict": None,
        "reason": None,
        "comment": None,
        "mark_json": None,
        "triage_correct": None,
        "review_requested": False,
        "model_id": None,
        "model_version": None,
        "device_uid": None,
        "seconds_on_study": seconds,
        "ai_visible": True,
    }


def _client_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _verdict(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.70:
        return {"verdict": "agree", "reason": None, "comment": None}
    if roll < 0.85:
        return {"verdict": "unsure", "reason": None, "comment": None}
    reason = rng.choice(REASONS) if rng.random() < 0.8 else None
    return {"verdict": "disagree", "reason": reason, "comment": "skin fold over the apex"}


def _index_studies(connection: Connection, study_uids: list[str]) -> None:
    """A study index row for each study (a database older than the index has none to fill)."""
    if not inspect(connection).has_table("studies"):
        return
    table = Table("studies", MetaData(), autoload_with=connection)
    defaults: dict[str, Any] = {
        column.name: column.default.arg
        for column in IndexedStudy.__table__.columns
        if column.name in table.c and column.default is not None and column.default.is_scalar
    }
    defaults["indexed_at"] = datetime.now(UTC)
    rows = [
        defaults | {"orthanc_id": hashlib.sha256(uid.encode()).hexdigest(), "study_uid": uid}
        for uid in study_uids
    ]
    for start in range(0, len(rows), 50_000):
        connection.execute(insert(table), rows[start : start + 50_000])


def _bulk_insert(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    previous: dict[tuple[int, str, str], int] = {}
    for row in rows:  # an edit points at the row it replaces
        key = (row["user_id"], row["study_uid"], row["target"])
        if row["previous_id"] == "previous":
            row["previous_id"] = previous[key]
        previous[key] = row["id"]
    if connection.dialect.name == "postgresql":
        _copy(connection, rows)
        return
    for start in range(0, len(rows), 50_000):
        connection.execute(insert(table), rows[start : start + 50_000])


def _copy(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """COPY: a million rows in seconds where executemany takes minutes."""
    columns = list(rows[0])
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY feedback ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(tuple(row[column] for column in columns))


def _add_meetings(
    connection: Connection,
    tables: Mapping[str, Table],
    rng: random.Random,
    rows: list[dict[str, Any]],
    chair: int,
) -> int:
    """A monthly meeting over two years, each deciding 25 studies that had a discrepancy by then."""
    disagreements = [row for row in rows if row["verdict"] == "disagree" or row["kind"] == "missed"]
    decided = 0
    for month in range(24):
        window = disagreements[month * len(disagreements) // 24 : (month + 1) * len(disagreements) // 24]
        studies = list(dict.fromkeys(row["study_uid"] for row in window))
        chosen = rng.sample(studies, min(25, len(studies)))
        when = window[-1]["created_at"] if window else datetime.now(UTC)
        meeting = connection.execute(
            insert(tables["review_meetings"]).returning(tables["review_meetings"].c.id),
            {"title": f"Discrepancy meeting {month + 1}", "chair_id": chair, "started_at": when},
        ).scalar_one()
        for position, uid in enumerate(chosen, 1):
            case = connection.execute(
                insert(tables["review_cases"]).returning(tables["review_cases"].c.id),
                {"meeting_id": meeting, "position": position, "study_uid": uid}
                | {"models": "", "findings": "", "discrepancy": ""},
            ).scalar_one()
            outcome = rng.choice([item.value for item in Outcome])
            connection.execute(
                insert(tables["review_decisions"]),
                {"case_id": case, "outcome": outcome, "decided_by_id": chair, "decided_at": when}
                | {"learning_point": "", "follow_up": ""},
            )
        decided += len(chosen)
    return decided
