"""Durable inference jobs: one row per (series, model version), the record of what ran and why not.

The row is the truth; handing a job to a worker is a separate concern (``inference.dispatch``). A job is
claimed with a lease: a worker that dies leaves its job ``running`` with an expired lease, and the next
claim takes it back, so a restart loses nothing; the unique key means it can never run as a second job.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openaim.db import Base, UTCDateTime, utcnow


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # kept failing (transient errors exhausted the retries); reason says why
    NOT_APPLICABLE = "not_applicable"  # the input cannot be read by this model; reason says why


class Job(Base):
    __tablename__ = "inference_jobs"
    __table_args__ = (
        UniqueConstraint("series_uid", "model_version_id", name="uq_inference_jobs_series_uid_model"),
        Index("ix_inference_jobs_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_uid: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value)
    attempts: Mapped[int] = mapped_column(default=0)
    reason: Mapped[str | None] = mapped_column(Text)  # why it failed or does not apply, or the last error
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
