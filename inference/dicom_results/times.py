"""One moment for every time an SR or SEG records, so that the same job writes the same bytes.

The pipeline gives each result fixed UIDs so that a re-run job re-sends the same instances (idempotent
STOW). highdicom stamps "now" into several attributes; a result written twice would then be two different
objects under one SOP Instance UID. Every stamp is set to the one ``when`` instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydicom import Dataset
from pydicom.valuerep import DA, DT, TM


def stamps(when: datetime) -> dict[str, Any]:
    """Content and series date/time keyword arguments for a highdicom SOP class constructor."""
    return {
        "content_date": when.date(),
        "content_time": when.time(),
        "series_date": when.date(),
        "series_time": when.time(),
    }


def settle(dataset: Dataset, when: datetime) -> Dataset:
    """Instance Creation and every Contribution DateTime (highdicom's own item has one) set to ``when``."""
    dataset.InstanceCreationDate = DA(when.date())
    dataset.InstanceCreationTime = TM(when.time())
    for item in dataset.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DT(when)
    return dataset
