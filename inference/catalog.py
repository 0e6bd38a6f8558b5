"""The model catalog: which package versions are installed, and in which mode each one runs.

Modes: ``off`` (installed, never run), ``shadow`` (runs silently for a trial; readers never see it) and
``clinical`` (shown to readers). Several versions of a model may be installed; at most one is clinical at
a time, and the database itself enforces that (a partial unique index), not only this module.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from openaim.db import Base, UTCDateTime, utcnow


class Mode(StrEnum):
    OFF = "off"
    SHADOW = "shadow"
    CLINICAL = "clinical"


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
        Index(
            "uq_model_versions_one_clinical",
            "model_id",
            unique=True,
            sqlite_where=text("mode = 'clinical'"),
            postgresql_where=text("mode = 'clinical'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    vendor: Mapped[str] = mapped_column(String(200))
    device_uid: Mapped[str] = mapped_column(String(64), unique=True)  # new for every version (IHE AIR)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    manifest_json: Mapped[str] = mapped_column(Text)  # the validated manifest, as installed
    package_path: Mapped[str] = mapped_column(String(1024))  # the unpacked package in the data dir
    mode: Mapped[str] = mapped_column(String(16), default=Mode.OFF.value)
    installed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    installed_by: Mapped[str] = mapped_column(String(64))
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # retired: kept for the record
