"""Failed password sign-ins kept in the database, so that every viewer process counts them: a (username,
source address) pair locks after a few in a window; wide limits per username and per address (issue 15
item 6, viewer/access/throttle.py).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from openaim.db import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signin_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("attempted_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signin_attempts")),
    )
    op.create_index("ix_signin_attempts_pair", "signin_attempts", ["username", "source", "attempted_at"])
    op.create_index("ix_signin_attempts_source", "signin_attempts", ["source", "attempted_at"])
    op.create_index("ix_signin_attempts_attempted_at", "signin_attempts", ["attempted_at"])


def downgrade() -> None:
    op.drop_table("signin_attempts")
