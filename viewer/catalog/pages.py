"""Model cards: the admin's catalog page (a card per installed version, mode changes, what did not run)
and the card of one version for readers, one click from each of its results.

Cards show what a manifest claims (intended use, regulatory status, performance) next to what the platform
knows (device UID, weights hash, who installed it), so an admin switches a model on knowing both. Failed jobs
and series no model accepts are listed by UID only: this page is about models, never about patients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Path, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inference import catalog
from inference.catalog import CatalogError, Mode, ModelVersion, UnknownVersionError
from inference.jobs import Job, JobState
from inference.manifest import Manifest
from inference.router import UnroutedSeries
from openaim import audit
from viewer.access.deps import Admin, Audit, CardReader, DbSession, Monitor
from viewer.reading.ai_policy import forget_study_series
from viewer.templates import render

router = APIRouter()

MAX_ROWS = 100  # the newest failures; an admin fixing a cause does not need the whole history here
PROBLEM_STATES = (JobState.FAILED.value, JobState.NOT_APPLICABLE.value)

ModelId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$")]
VERSION_PATTERN = r"^[0-9A-Za-z.+-]+$"
VersionField = Annotated[str, Form(max_length=64, pattern=VERSION_PATTERN)]
VersionPath = Annotated[str, Path(max_length=64, pattern=VERSION_PATTERN)]


@dataclass(frozen=True)
class ModelCard:
    """One installed version as the page shows it: the manifest as installed plus the catalog's record."""

    model_id: str
    version: str
    mode: str
    device_uid: str
    weights_sha256: str
    installed_by: str
    installed_at: datetime
    retired_at: datetime | None
    manifest: Manifest

    @classmethod
    def of(cls, version: ModelVersion) -> ModelCard:
        return cls(
            model_id=version.model_id,
            version=version.version,
            mode=version.mode,
            device_uid=version.device_uid,
            weights_sha256=version.weights_sha256,
            installed_by=version.installed_by,
            installed_at=version.installed_at,
            retired_at=version.retired_at,
            manifest=catalog.manifest_of(version),
        )

    @property
    def modes(self) -> list[str]:
        """The modes a button may switch this version to."""
        return [] if self.retired_at else [mode.value for mode in Mode if mode.value != self.mode]


@dataclass(frozen=True)
class ProblemJob:
    study_uid: str
    series_uid: str
    model: str
    state: str
    attempts: int
    reason: str
    finished_at: datetime | None


def _cards(db: Session) -> list[ModelCard]:
    return [ModelCard.of(version) for version in catalog.list_versions(db)]


def _problem_jobs(db: Session) -> tuple[list[ProblemJob], int]:
    rows = db.execute(
        select(Job, ModelVersion.model_id, ModelVersion.version)
        .join(ModelVersion, Job.model_version_id == ModelVersion.id)
        .where(Job.state.in_(PROBLEM_STATES))
        .order_by(Job.finished_at.desc(), Job.id.desc())
        .limit(MAX_ROWS)
    ).all()
    total = db.scalar(select(func.count()).select_from(Job).where(Job.state.in_(PROBLEM_STATES))) or 0
    jobs = [
        ProblemJob(
            study_uid=job.study_uid,
            series_uid=job.series_uid,
            model=f"{model_id} {version}",
            state=job.state,
            attempts=job.attempts,
            reason=job.reason or "",
            finished_at=job.finished_at,
        )
        for job, model_id, version in rows
    ]
    return jobs, total


def _unrouted(db: Session) -> tuple[list[UnroutedSeries], int]:
    rows = db.scalars(select(UnroutedSeries).order_by(UnroutedSeries.decided_at.desc()).limit(MAX_ROWS)).all()
    total = db.scalar(select(func.count()).select_from(UnroutedSeries)) or 0
    return list(rows), total


@router.get("/admin/models")
def models_page(request: Request, _: Monitor, db: DbSession) -> Response:
    jobs, jobs_total = _problem_jobs(db)
    unrouted, unrouted_total = _unrouted(db)
    return render(
        request,
        "catalog/models.html",
        cards=_cards(db),
        notices=[],
        jobs=jobs,
        jobs_total=jobs_total,
        unrouted=unrouted,
        unrouted_total=unrouted_total,
    )


@router.get("/models/{model_id}/{version}")
def model_card(
    request: Request, model_id: ModelId, version: VersionPath, _: CardReader, db: DbSession
) -> Response:
    found = catalog.get_version(db, model_id, version)
    if found is None:
        raise HTTPException(404, "No such model version is installed.")
    return render(request, "catalog/model_card.html", card=ModelCard.of(found))


@router.post("/admin/models/{model_id}/mode")
def change_mode(
    request: Request,
    model_id: ModelId,
    user: Admin,
    db: DbSession,
    trail: Audit,
    version: VersionField,
    mode: Annotated[Mode, Form()],
) -> Response:
    """Set a version's mode; making one clinical demotes the model's clinical version to shadow."""
    return _change(request, db, trail, lambda: catalog.set_mode(db, model_id, version, mode, user.username))


@router.post("/admin/models/{model_id}/retire")
def retire(
    request: Request, model_id: ModelId, user: Admin, db: DbSession, trail: Audit, version: VersionField
) -> Response:
    """Switch a version off for good; it stays listed, since results refer to it."""
    return _change(request, db, trail, lambda: catalog.retire(db, model_id, version, user.username))


def _change(request: Request, db: Session, trail: Audit, action: Callable[[], ModelVersion]) -> Response:
    try:
        action()
    except CatalogError as error:
        if not request.headers.get("HX-Request"):
            status = 404 if isinstance(error, UnknownVersionError) else 409
            raise HTTPException(status, str(error)) from error
        notices = [str(error)]  # htmx swaps only 2xx answers: the refusal is shown in the cards
    else:
        changes = catalog.take_changes(db)
        forget_study_series(request)  # a version leaving clinical hides its results now, not in seconds
        for change in changes:  # appended by get_db in this request's transaction
            trail.record(audit.EventType.AI_MODEL_CHANGED, **change.audit_fields())
        notices = [change.describe() for change in changes] or ["Nothing to change."]
    if not request.headers.get("HX-Request"):
        return RedirectResponse("/admin/models", status_code=303)
    return render(request, "catalog/models_cards.html", cards=_cards(db), notices=notices)
