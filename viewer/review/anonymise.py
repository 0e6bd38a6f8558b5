"""Keeping a study's patient identifiers out of free text shown in a review meeting or written to minutes.

Meeting pages never print the identifiers themselves, but people type: a reader's comment or a learning
point may name the patient. The platform knows the identifiers of the study (from the archive), so it
removes them from such text before it is shown or stored. Short fragments (under three characters) are
left alone: removing every "Li" from a sentence would mangle it and protect nobody.
"""

from __future__ import annotations

import re

from pydicom import Dataset
from pydicom.valuerep import PersonName

REMOVED = "[removed]"
MIN_LENGTH = 3
IDENTIFYING = ("PatientID", "AccessionNumber", "OtherPatientIDs", "PatientBirthDate", "StudyDate")


def identifiers_of(study: Dataset) -> list[str]:
    """The strings that identify the patient of ``study``: name parts, IDs, accession, dates."""
    found: list[str] = []
    name = study.get("PatientName")
    if name:
        person = name if isinstance(name, PersonName) else PersonName(str(name))
        found += [str(person), *person.components, person.family_name, person.given_name, person.middle_name]
    for keyword in IDENTIFYING:
        value = study.get(keyword)
        values = value if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else [value]
        found += [str(item) for item in values if item]
    dates = [item for item in found if len(item) == 8 and item.isdigit()]
    found += [f"{item[:4]}-{item[4:6]}-{item[6:]}" for item in dates]
    return sorted({item.strip() for item in found if len(item.strip()) >= MIN_LENGTH}, key=len, reverse=True)


def scrub(text: str, identifiers: list[str]) -> str:
    """``text`` with every identifier (any case, longest first) replaced by ``[removed]``."""
    if not text or not identifiers:
        return text
    pattern = "|".join(re.escape(item) for item in identifiers)
    return re.sub(pattern, REMOVED, text, flags=re.IGNORECASE)
