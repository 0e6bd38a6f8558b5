"""DICOM values as text for people: names, dates. Plain strings; escaping is the templates' job."""

from __future__ import annotations

from typing import Any

from pydicom import Dataset
from pydicom.valuerep import PersonName


def person_name(value: Any) -> str:
    """``DOE^JANE`` as ``DOE, JANE``."""
    if value is None or value == "":
        return ""
    name = value if isinstance(value, PersonName) else PersonName(str(value))
    parts = [part for part in (name.family_name, name.given_name, name.middle_name) if part]
    return ", ".join(parts[:2]) + (f" {parts[2]}" if len(parts) > 2 else "") if parts else str(name)


def dicom_date(value: Any) -> str:
    """``20261122`` as ``2026-11-22``; anything else unchanged."""
    text = str(value or "")
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def text_value(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "/".join(str(item) for item in value)
    return str(value)
