"""Discrepancy review meetings: attendees, cases in running order (with their discrepancies as they were
at the start) and one consensus decision per case.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

import openaim.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_meetings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("chair_id", sa.Integer(), nullable=False),
        sa.Column("started_at", openaim.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", openaim.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["chair_id"], ["users.id"], name=op.f("fk_review_meetings_chair_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_meetings")),
    )
    with op.batch_alter_table("review_meetings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_meetings_chair_id"), ["chair_id"], unique=False)

    op.create_table(
        "review_attendees",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("meeting_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["meeting_id"],
            ["review_meetings.id"],
            name=op.f("fk_review_attendees_meeting_id_review_meetings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_review_attendees_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_attendees")),
    )
    with op.batch_alter_table("review_attendees", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_attendees_meeting_id"), ["meeting_id"], unique=False)

    op.create_table(
        "review_cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("meeting_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("models", sa.Text(), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("discrepancy", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["meeting_id"],
            ["review_meetings.id"],
            name=op.f("fk_review_cases_meeting_id_review_meetings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_cases")),
        sa.UniqueConstraint("meeting_id", "position", name="uq_review_cases_position"),
        sa.UniqueConstraint("meeting_id", "study_uid", name="uq_review_cases_study"),
    )
    with op.batch_alter_table("review_cases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_cases_meeting_id"), ["meeting_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_review_cases_study_uid"), ["study_uid"], unique=False)

    op.create_table(
        "review_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("learning_point", sa.Text(), nullable=False),
        sa.Column("follow_up", sa.Text(), nullable=False),
        sa.Column("decided_by_id", sa.Integer(), nullable=False),
        sa.Column("decided_at", openaim.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["review_cases.id"],
            name=op.f("fk_review_decisions_case_id_review_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"], ["users.id"], name=op.f("fk_review_decisions_decided_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_decisions")),
        sa.UniqueConstraint("case_id", name=op.f("uq_review_decisions_case_id")),
    )


def downgrade() -> None:
    op.drop_table("review_decisions")
    with op.batch_alter_table("review_cases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_cases_study_uid"))
        batch_op.drop_index(batch_op.f("ix_review_cases_meeting_id"))

    op.drop_table("review_cases")
    with op.batch_alter_table("review_attendees", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_attendees_meeting_id"))

    op.drop_table("review_attendees")
    with op.batch_alter_table("review_meetings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_meetings_chair_id"))

    op.drop_table("review_meetings")
