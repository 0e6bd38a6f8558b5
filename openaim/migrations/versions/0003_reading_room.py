"""Reading room: readers' impressions of studies and the per-user blinded-read setting.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

import openaim.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "study_reads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("impression", sa.String(length=16), nullable=False),
        sa.Column("ai_visible", sa.Boolean(), nullable=False),
        sa.Column("created_at", openaim.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_study_reads_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_reads")),
    )
    with op.batch_alter_table("study_reads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_study_reads_study_uid"), ["study_uid"], unique=False)
        batch_op.create_index(batch_op.f("ix_study_reads_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("blinded_read", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("blinded_read")
    with op.batch_alter_table("study_reads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_reads_user_id"))
        batch_op.drop_index(batch_op.f("ix_study_reads_study_uid"))
    op.drop_table("study_reads")
