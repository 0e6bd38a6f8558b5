"""Inference: the model catalog, the change cursor, routing decisions, durable jobs and their results.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

import openaim.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("vendor", sa.String(length=200), nullable=False),
        sa.Column("device_uid", sa.String(length=64), nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.Column("package_path", sa.String(length=1024), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("installed_at", openaim.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("installed_by", sa.String(length=64), nullable=False),
        sa.Column("retired_at", openaim.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("device_uid", name=op.f("uq_model_versions_device_uid")),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_versions_model_id"), ["model_id"], unique=False)
        batch_op.create_index(
            "uq_model_versions_one_clinical",
            ["model_id"],
            unique=True,
            sqlite_where=sa.text("mode = 'clinical'"),
            postgresql_where=sa.text("mode = 'clinical'"),
        )

    op.create_table(
        "orthanc_change_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("updated_at", openaim.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_orthanc_change_cursor")),
    )
    op.create_table(
        "unrouted_series",
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decided_at", openaim.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("series_uid", name=op.f("pk_unrouted_series")),
    )
    with op.batch_alter_table("unrouted_series", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_unrouted_series_study_uid"), ["study_uid"], unique=False)

    op.create_table(
        "inference_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", openaim.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", openaim.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_expires_at", openaim.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", openaim.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_inference_jobs_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inference_jobs")),
        sa.UniqueConstraint("series_uid", "model_version_id", name="uq_inference_jobs_series_uid_model"),
    )
    with op.batch_alter_table("inference_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_inference_jobs_state_next_attempt_at", ["state", "next_attempt_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_inference_jobs_study_uid"), ["study_uid"], unique=False)

    op.create_table(
        "inference_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("triage", sa.String(length=16), nullable=True),
        sa.Column("sr_uid", sa.String(length=64), nullable=False),
        sa.Column("seg_uid", sa.String(length=64), nullable=True),
        sa.Column("created_at", openaim.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["inference_jobs.id"], name=op.f("fk_inference_results_job_id_inference_jobs")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_inference_results_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inference_results")),
        sa.UniqueConstraint("job_id", name=op.f("uq_inference_results_job_id")),
    )
    with op.batch_alter_table("inference_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inference_results_model_version_id"), ["model_version_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_inference_results_study_uid"), ["study_uid"], unique=False)

    op.create_table(
        "inference_findings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("positive", sa.Boolean(), nullable=False),
        sa.Column("boxes_json", sa.Text(), nullable=False),
        sa.Column("heatmap_png", sa.LargeBinary(), nullable=True),
        sa.Column("heatmap_region", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["result_id"],
            ["inference_results.id"],
            name=op.f("fk_inference_findings_result_id_inference_results"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inference_findings")),
    )
    with op.batch_alter_table("inference_findings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inference_findings_result_id"), ["result_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("inference_findings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inference_findings_result_id"))

    op.drop_table("inference_findings")
    with op.batch_alter_table("inference_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inference_results_study_uid"))
        batch_op.drop_index(batch_op.f("ix_inference_results_model_version_id"))

    op.drop_table("inference_results")
    with op.batch_alter_table("inference_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inference_jobs_study_uid"))
        batch_op.drop_index("ix_inference_jobs_state_next_attempt_at")

    op.drop_table("inference_jobs")
    with op.batch_alter_table("unrouted_series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_unrouted_series_study_uid"))

    op.drop_table("unrouted_series")
    op.drop_table("orthanc_change_cursor")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_model_versions_one_clinical",
            sqlite_where=sa.text("mode = 'clinical'"),
            postgresql_where=sa.text("mode = 'clinical'"),
        )
        batch_op.drop_index(batch_op.f("ix_model_versions_model_id"))

    op.drop_table("model_versions")
