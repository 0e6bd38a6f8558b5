"""The worklist's search by patient ID or accession with a DICOM wildcard (``A0000002*``) uses an index on
PostgreSQL: its b-tree indexes serve ``LIKE 'A0000002%'`` only with the pattern operator class. The same
indexes, rebuilt with ``varchar_pattern_ops`` (equality lookups still use them). SQLite is unchanged: its
GLOB uses the plain index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = ("patient_id", "accession")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in COLUMNS:
        op.drop_index(f"ix_studies_{column}", table_name="studies")
        op.create_index(
            f"ix_studies_{column}", "studies", [column], postgresql_ops={column: "varchar_pattern_ops"}
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in COLUMNS:
        op.drop_index(f"ix_studies_{column}", table_name="studies")
        op.create_index(f"ix_studies_{column}", "studies", [column])
