"""Routing: which installed, enabled models accept a series, judged on its DICOM attributes.

A series that no model accepts is recorded with each model's reason, so an admin can tell "no model for
CT" from "the watcher never saw it".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, Session, mapped_column

from inference.jobs import enqueue
from inference.manifest import Selector
from openaim.db import Base, UTCDateTime, utcnow


class UnroutedSeries(Base):
    __tablename__ = "unrouted_series"

    series_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


@dataclass(frozen=True)
class Candidate:
    """An enabled model version as the router sees it."""

    model_version_id: int
    name: str  # "id version", for reasons
    selectors: tuple[Selector, ...]


def mismatch(selectors: tuple[Selector, ...], tags: Mapping[str, Any]) -> str | None:
    """Why a series' attributes fail a model's selectors, or None when every selector matches."""
    for selector in selectors:
        present = _values(tags.get(selector.keyword))
        if not present:
            return f"{selector.keyword} is missing (expects {', '.join(selector.values)})"
        if not set(present) & set(selector.values):
            shown = "/".join(present)
            return f"{selector.keyword} is {shown} (expects {', '.join(selector.values)})"
    return None


def _values(value: Any) -> list[str]:
    if value is None or isinstance(value, list | dict):  # absent, or a sequence: never a match
        return []
    return [part.strip() for part in str(value).split("\\") if part.strip()]


def route_series(
    db: Session, study_uid: str, series_uid: str, tags: Mapping[str, Any], candidates: list[Candidate]
) -> list[int]:
    """Queue a job for every candidate that accepts the series; record why when none does."""
    accepted, reasons = [], []
    for candidate in candidates:
        reason = mismatch(candidate.selectors, tags)
        if reason is None:
            accepted.append(candidate.model_version_id)
            enqueue(db, study_uid, series_uid, candidate.model_version_id)
        else:
            reasons.append(f"{candidate.name}: {reason}")
    if not accepted:
        row = db.get(UnroutedSeries, series_uid) or UnroutedSeries(series_uid=series_uid, study_uid=study_uid)
        row.reason = "; ".join(reasons) if reasons else "no model is enabled"
        row.decided_at = utcnow()
        db.add(row)
    return accepted
