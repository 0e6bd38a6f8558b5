"""The audit chain is keyed (HMAC-SHA256) from here on: ``audit_chain`` records the last row written before,
whose plain SHA-256 stays valid (those rows are not rewritten: the trigger refuses it, and a rewritten
trail is what the chain exists to catch). Its one row is also what SQLite appenders write first, to hold
the write lock while they read the chain's head, in the transaction of the action they record.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unkeyed_until", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain")),
    )
    op.execute("INSERT INTO audit_chain (id, unkeyed_until) SELECT 1, COALESCE(MAX(id), 0) FROM audit_events")


def downgrade() -> None:
    op.drop_table("audit_chain")
