"""PS3.15 Annex E, Table E.1-1 (edition 2026c): what the Basic Application Level Confidentiality Profile
does to each attribute that dicognito does not already handle the way the profile asks. The table itself is
data beside this module (``annex_e_2026c.csv``, one row per attribute, named and tagged as in the standard),
so that it can be compared with the standard row by row and replaced whole by the next edition.

Why a table beside dicognito: dicognito fakes names, identifiers, addresses and institutions, remaps every
UID and shifts every date, but it keeps free text (descriptions, comments, protocol names...) that the
basic profile removes. The action per attribute was transcribed from the machine-readable copy of the
table in KitwareMedical/dicom-anonymizer (BSD-3, ``dicomfields_2026c.py``) and checked against pydicom's
dictionary. Left out on purpose, because the case pack handles them otherwise:
- UI attributes (U): remapped by dicognito, consistently across the pack;
- DA, DT and TM attributes: shifted by the pack's one offset (Retain Longitudinal Temporal Information
  with Modified Dates Option), except the birth date and time, which stay empty;
- Content Sequence and Verifying Observer Sequence (D): kept and cleaned item by item (Clean Structured
  Content Option), since the SR or SEG content is the teaching material;
- Referenced Image Sequence and Source Image Sequence (X/Z/U*): kept, their UIDs remapped.
Where the table allows a choice, the pack takes the one that keeps the least: X or X/D removes; Z, Z/D,
X/Z and X/Z/D keep the attribute empty.
"""

from __future__ import annotations

import csv
from pathlib import Path

EDITION = "2026c"
TABLE = Path(__file__).with_name(f"annex_e_{EDITION}.csv")


def _rows() -> list[dict[str, str]]:
    with TABLE.open(encoding="utf-8", newline="") as table:
        return list(csv.DictReader(line for line in table if not line.startswith("#")))


def _keywords(rows: list[dict[str, str]], action: str) -> frozenset[str]:
    return frozenset(row["keyword"] for row in rows if row["action"] == action and row["keyword"])


def _tag(text: str) -> int:
    """``(0008,1301)`` as the standard writes it, to the int pydicom compares with."""
    group, element = text.strip("()").split(",")
    return int(group + element, 16)


_ROWS = _rows()

# X or X/D in the table, and D-only sequences and binary values: removed.
REMOVE: frozenset[str] = _keywords(_ROWS, "remove")

# Z, Z/D, X/Z or X/Z/D in the table: kept, empty (zero length keeps a Type 2 attribute conformant).
# The birth date and time too: the modified-dates option does not cover them.
EMPTY: frozenset[str] = _keywords(_ROWS, "empty")

# D only, text: replaced by a dummy value (person names are left to dicognito, which fakes them).
REPLACE: frozenset[str] = _keywords(_ROWS, "replace")

# X in the table, attributes newer than pydicom's dictionary (so known here by tag only).
UNNAMED_REMOVE: frozenset[int] = frozenset(
    _tag(row["tag"]) for row in _ROWS if row["action"] == "remove" and not row["keyword"]
)
