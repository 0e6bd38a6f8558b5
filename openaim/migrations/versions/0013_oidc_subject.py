"""OpenID Connect sign-in: an account an identity provider vouches for holds its issuer and subject
(issue 15 item 6, viewer/access/oidc.py).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("oidc_subject", sa.String(length=512), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_users_oidc_subject"), ["oidc_subject"])


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_users_oidc_subject"), type_="unique")
        batch_op.drop_column("oidc_subject")
