"""Durable inference jobs: one row per (series, model version), the record of what ran and why not.

The row is the truth; handing a job to a worker is a separate concern (``inference.dispatch``). A job is
claimed with a lease: a worker that dies leaves its job ``running`` with an expired lease, and the next
claim takes it back, so a restart loses nothing; the unique key means it can never run as a second job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from openaim.db import Base, UTCDateTime, transaction, utcnow

MAX_BACKOFF_SECONDS = 600.0


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    # kept failing (transient errors exhausted the retries), or failed in a way that would repeat (its
    # SR/SEG cannot be built): reason says why
    FAILED = "failed"
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


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    study_uid: str
    series_uid: str
    model_version_id: int
    attempt: int  # 1 for the first run


def enqueue(db: Session, study_uid: str, series_uid: str, model_version_id: int) -> bool:
    """Add a job unless one exists for this (series, model version); True when it was added."""
    insert = sqlite_insert if db.get_bind().dialect.name == "sqlite" else postgresql_insert
    statement = (
        insert(Job)
        .values(
            study_uid=study_uid,
            series_uid=series_uid,
            model_version_id=model_version_id,
            state=JobState.QUEUED.value,
            attempts=0,
            created_at=utcnow(),
            next_attempt_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["series_uid", "model_version_id"])
        .returning(Job.id)
    )
    return db.execute(statement).scalar() is not None


def claim(
    factory: sessionmaker[Session], limit: int, lease_seconds: float, max_attempts: int
) -> list[ClaimedJob]:
    """Take up to ``limit`` due jobs: queued ones whose back-off has passed, and running ones whose worker
    died (lease expired). Each is taken with a conditional UPDATE, so two workers never take the same job.
    An idle call only reads: it runs every poll, and must not take the database's write lock for nothing."""
    now = utcnow()
    with transaction(factory) as db:
        due = db.scalars(
            select(Job)
            .where(
                or_(
                    and_(Job.state == JobState.QUEUED.value, Job.next_attempt_at <= now),
                    and_(Job.state == JobState.RUNNING.value, Job.lease_expires_at < now),
                )
            )
            .order_by(Job.next_attempt_at, Job.id)
            .limit(limit)
        ).all()
        claimed = []
        for job in due:
            if job.state == JobState.RUNNING.value and job.attempts >= max_attempts:
                # Its worker died on every attempt (a poison input that kills the process): it must not
                # take the service down forever, so it ends failed, with that said.
                _update_if_unchanged(
                    db,
                    job,
                    state=JobState.FAILED.value,
                    reason="the worker stopped while running this job, every attempt",
                    finished_at=now,
                )
            elif _update_if_unchanged(
                db,
                job,
                state=JobState.RUNNING.value,
                attempts=job.attempts + 1,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            ):
                claimed.append(
                    ClaimedJob(job.id, job.study_uid, job.series_uid, job.model_version_id, job.attempts + 1)
                )
    return claimed


def _update_if_unchanged(db: Session, job: Job, **values: object) -> bool:
    """Update the job only if nobody changed it since it was read; True when this call did."""
    result = db.execute(
        update(Job)
        .where(Job.id == job.id, Job.state == job.state, Job.attempts == job.attempts)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]  # an UPDATE's result has a rowcount


def finish(db: Session, job_id: int, state: JobState, reason: str | None = None) -> None:
    """End a job: done, failed or not applicable (with the reason an admin will read)."""
    db.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(state=state.value, reason=reason, finished_at=utcnow(), lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def retry_later(
    db: Session, job: ClaimedJob, reason: str, max_attempts: int, base_seconds: float
) -> JobState:
    """A transient error: back off exponentially, or end failed once the attempts are used up."""
    if job.attempt >= max_attempts:
        finish(db, job.id, JobState.FAILED, f"failed {job.attempt} times; last error: {reason}")
        return JobState.FAILED
    delay = min(base_seconds * 2 ** (job.attempt - 1), MAX_BACKOFF_SECONDS)
    db.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(
            state=JobState.QUEUED.value,
            reason=f"attempt {job.attempt} failed: {reason}",
            next_attempt_at=utcnow() + timedelta(seconds=delay),
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return JobState.QUEUED
