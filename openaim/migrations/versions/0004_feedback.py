"""Second-reader feedback: versioned rows per (reader, study, target), idempotent by client id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

import openaim.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=120), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("previous_id", sa.Integer(), nullable=True),
        sa.Column("result_id", sa.String(length=80), nullable=True),
        sa.Column("finding_id", sa.String(length=80), nullable=True),
        sa.Column("finding_label", sa.String(length=200), nullable=True),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=48), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("mark_json", sa.Text(), nullable=True),
        sa.Column("triage_correct", sa.Boolean(), nullable=True),
        sa.Column("review_requested", sa.Boolean(), nullable=False),
        sa.Column("model_id", sa.String(length=200), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("device_uid", sa.String(length=64), nullable=True),
        sa.Column("seconds_on_study", sa.Float(), nullable=True),
        sa.Column("ai_visible", sa.Boolean(), nullable=False),
        sa.Column("created_at", openaim.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["previous_id"], ["feedback.id"], name=op.f("fk_feedback_previous_id_feedback")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_feedback_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
        sa.UniqueConstraint("client_id", name=op.f("uq_feedback_client_id")),
        sa.UniqueConstraint("user_id", "study_uid", "target", "version", name="uq_feedback_version"),
    )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feedback_study_uid"), ["study_uid"], unique=False)
        batch_op.create_index(batch_op.f("ix_feedback_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feedback_user_id"))
        batch_op.drop_index(batch_op.f("ix_feedback_study_uid"))

    op.drop_table("feedback")
