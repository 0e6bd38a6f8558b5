"""Database row ids as they may appear in a URL: whole numbers from 1 to the largest a 64-bit signed
column holds. Every route takes its ids through these types, so that an id out of range (2**63) is refused
with 422 at the edge instead of overflowing inside SQLite or PostgreSQL (OverflowError, a 500)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path, Query

MAX_ROW_ID: Final = 2**63 - 1

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
OptionalRowIdQuery = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)]
