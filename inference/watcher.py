"""Learning of new studies from Orthanc's ``/changes``, with the cursor kept in the database.

Only ``StableStudy`` matters: a study is routed once Orthanc has seen no new instance for StableAge
seconds. The cursor is advanced in the same transaction that records what the changes led to, so a crash
either keeps both or neither.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from openaim.db import Base, UTCDateTime, utcnow


class ChangeCursor(Base):
    __tablename__ = "orthanc_change_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)  # one row per archive watched
    last_seq: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
