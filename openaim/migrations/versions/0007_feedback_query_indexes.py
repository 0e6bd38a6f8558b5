"""Feedback indexes for the review queue and "My feedback" at volume (issue 14): everyone's rows by save
time, one reader's, one model's, one finding's, each ending in (created_at, id) so that a page is read in
order and stops early. The single-column user_id index goes: (user_id, created_at, id) and the unique
(user_id, study_uid, target, version) both start with user_id.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_feedback_created_at_id": ["created_at", "id"],
    "ix_feedback_user_id_created_at": ["user_id", "created_at", "id"],
    "ix_feedback_model_id_created_at": ["model_id", "created_at", "id"],
    "ix_feedback_finding_label_created_at": ["finding_label", "created_at", "id"],
}


def upgrade() -> None:
    # Plain op.create_index, not batch mode: on SQLite a batch would copy the whole table for an index.
    for name, columns in INDEXES.items():
        op.create_index(name, "feedback", columns)
    op.drop_index("ix_feedback_user_id", table_name="feedback")


def downgrade() -> None:
    op.create_index("ix_feedback_user_id", "feedback", ["user_id"])
    for name in INDEXES:
        op.drop_index(name, table_name="feedback")
