"""Routing: which installed, enabled models accept a series, judged on its DICOM attributes.

A series that no model accepts is recorded with each model's reason, so an admin can tell "no model for
CT" from "the watcher never saw it".
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from openaim.db import Base, UTCDateTime, utcnow


class UnroutedSeries(Base):
    __tablename__ = "unrouted_series"

    series_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
