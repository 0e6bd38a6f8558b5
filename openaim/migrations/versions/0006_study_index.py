"""The study index: one row per study in the archive (what the worklist sorts, filters and pages on in SQL),
and the triggers that keep each row's worklist state (AI status, triage flag, read) level with the jobs,
results, model modes and reads it comes from, whichever code writes them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

import openaim.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The worklist's state of the rows matching {where}, as viewer/reading/study_status.py states the rule:
# only clinical model versions count; among a study's clinical jobs running > queued > failed > done >
# not applicable; without one, "not applicable" once the router has seen the study, else "waiting"; the
# highest clinical flag (urgent 0, priority 1, routine 2, none 3); the flag "failed" when every result
# raising it belongs to a failed job. Portable SQL: the same text runs on SQLite and PostgreSQL.
_CLINICAL_RESULTS = """FROM inference_results r JOIN model_versions v ON v.id = r.model_version_id
       WHERE r.study_uid = studies.study_uid AND v.mode = 'clinical'"""
_RANK = "CASE r.triage WHEN 'urgent' THEN 0 WHEN 'priority' THEN 1 WHEN 'routine' THEN 2 ELSE 3 END"
# Constant text: no value from outside reaches it.
REFRESH = f"""
UPDATE studies SET
  ai_status = CASE (
      SELECT MIN(CASE j.state WHEN 'running' THEN 0 WHEN 'queued' THEN 1 WHEN 'failed' THEN 2
                              WHEN 'done' THEN 3 ELSE 4 END)
      FROM inference_jobs j JOIN model_versions v ON v.id = j.model_version_id
      WHERE j.study_uid = studies.study_uid AND v.mode = 'clinical')
    WHEN 0 THEN 'running' WHEN 1 THEN 'waiting' WHEN 2 THEN 'failed' WHEN 3 THEN 'done'
    WHEN 4 THEN 'not applicable'
    ELSE CASE WHEN EXISTS (SELECT 1 FROM inference_jobs j WHERE j.study_uid = studies.study_uid)
                OR EXISTS (SELECT 1 FROM unrouted_series u WHERE u.study_uid = studies.study_uid)
         THEN 'not applicable' ELSE 'waiting' END
  END,
  triage_rank = COALESCE((SELECT MIN({_RANK}) {_CLINICAL_RESULTS}), 3),
  was_read = EXISTS (SELECT 1 FROM study_reads s WHERE s.study_uid = studies.study_uid)
WHERE {{where}};
UPDATE studies SET
  triage_failed = (triage_rank < 3 AND NOT EXISTS (
      SELECT 1 FROM inference_results r JOIN model_versions v ON v.id = r.model_version_id
        JOIN inference_jobs j ON j.id = r.job_id
      WHERE r.study_uid = studies.study_uid AND v.mode = 'clinical'
        AND j.state <> 'failed' AND {_RANK} = studies.triage_rank))
WHERE {{where}};
"""  # noqa: S608
# (table, events, which studies a row names): each change to these refreshes those studies
SOURCES = [
    ("studies", "INSERT", "study_uid = NEW.study_uid"),
    ("inference_jobs", "INSERT", "study_uid = NEW.study_uid"),
    ("inference_jobs", "UPDATE", "study_uid = NEW.study_uid"),
    ("inference_results", "INSERT", "study_uid = NEW.study_uid"),
    ("inference_results", "UPDATE", "study_uid = NEW.study_uid"),
    ("unrouted_series", "INSERT", "study_uid = NEW.study_uid"),
    ("study_reads", "INSERT", "study_uid = NEW.study_uid"),
    (
        "model_versions",
        "UPDATE",
        "study_uid IN (SELECT study_uid FROM inference_jobs WHERE model_version_id = NEW.id"
        " UNION SELECT study_uid FROM inference_results WHERE model_version_id = NEW.id)",
    ),
]


def _sqlite_triggers() -> list[str]:
    return [
        f"CREATE TRIGGER studies_refresh_{table}_{event.lower()} AFTER {event} ON {table}"
        + (" WHEN OLD.mode IS NOT NEW.mode" if table == "model_versions" else "")
        + f" BEGIN {REFRESH.format(where=where)} END"
        for table, event, where in SOURCES
    ]


def _postgresql_triggers() -> list[str]:
    statements = []
    for table, event, where in SOURCES:
        name = f"studies_refresh_{table}_{event.lower()}"
        statements.append(
            f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN {REFRESH.format(where=where)}"
            " RETURN NULL; END $$ LANGUAGE plpgsql"
        )
        when = " WHEN (OLD.mode IS DISTINCT FROM NEW.mode)" if table == "model_versions" else ""
        statements.append(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW{when} EXECUTE FUNCTION {name}()"
        )
    return statements


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("orthanc_id", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_name", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("accession", sa.String(length=64), nullable=False),
        sa.Column("study_date", sa.String(length=8), nullable=False),
        sa.Column("study_time", sa.String(length=16), nullable=False),
        sa.Column("waiting_since", sa.String(length=24), nullable=False),
        sa.Column("modalities", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("sex", sa.String(length=16), nullable=False),
        sa.Column("age", sa.String(length=16), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("station", sa.String(length=64), nullable=False),
        sa.Column("institution", sa.String(length=64), nullable=False),
        sa.Column("view_position", sa.String(length=16), nullable=False),
        sa.Column("body_part", sa.String(length=64), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("indexed_at", openaim.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("triage_rank", sa.SmallInteger(), nullable=False),
        sa.Column("triage_failed", sa.Boolean(), nullable=False),
        sa.Column("ai_status", sa.String(length=16), nullable=False),
        sa.Column("was_read", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("orthanc_id", name=op.f("uq_studies_orthanc_id")),
    )
    op.create_index(op.f("ix_studies_accession"), "studies", ["accession"], unique=False)
    op.create_index(op.f("ix_studies_patient_id"), "studies", ["patient_id"], unique=False)
    op.create_index(op.f("ix_studies_study_date"), "studies", ["study_date"], unique=False)
    op.create_index(op.f("ix_studies_study_uid"), "studies", ["study_uid"], unique=False)
    op.create_index("ix_studies_worklist", "studies", ["triage_rank", "waiting_since", "id"])
    for column in ("ai_status", "was_read", "modalities"):
        op.create_index(
            f"ix_studies_{column}_worklist", "studies", [column, "triage_rank", "waiting_since", "id"]
        )
    op.create_index("ix_studies_was_read_study_date", "studies", ["was_read", "study_date"])
    dialect = op.get_bind().dialect.name
    for statement in _postgresql_triggers() if dialect == "postgresql" else _sqlite_triggers():
        op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, event, _where in SOURCES:
        name = f"studies_refresh_{table}_{event.lower()}"
        op.execute(f"DROP TRIGGER {name} ON {table}" if postgresql else f"DROP TRIGGER {name}")
        if postgresql:
            op.execute(f"DROP FUNCTION {name}()")
    op.drop_table("studies")
