"""What a model said about a series, kept in the database for fast display beside the DICOM in Orthanc.

The DICOM objects (TID 1500 SR, fractional SEG) are the portable record; these rows are the index the
viewer reads. A result is unique per job: a job that runs again after a crash cannot add a second one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from openaim.db import Base, UTCDateTime, utcnow


class InferenceResult(Base):
    __tablename__ = "inference_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("inference_jobs.id"), unique=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))  # the image the model read
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    triage: Mapped[str | None] = mapped_column(String(16))  # urgent | priority | routine | None
    sr_uid: Mapped[str] = mapped_column(String(64))  # SOP Instance UID of the TID 1500 SR in Orthanc
    seg_uid: Mapped[str | None] = mapped_column(String(64))  # the fractional SEG of the heatmaps
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    findings: Mapped[list[Finding]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="Finding.id"
    )


class Finding(Base):
    __tablename__ = "inference_findings"

    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("inference_results.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200))
    probability: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    positive: Mapped[bool] = mapped_column(Boolean)
    boxes_json: Mapped[str] = mapped_column(Text, default="[]")  # [[x0, y0, x1, y1], ...] in image pixels
    heatmap_png: Mapped[bytes | None] = mapped_column(LargeBinary)  # 8-bit, covering ``heatmap_region``
    heatmap_region: Mapped[str | None] = mapped_column(String(64))  # "x0,y0,x1,y1" in image pixels
