"""The DICOM objects the platform writes into the archive itself, told apart from what modalities and other
vendors send: our AI results (SR and SEG) and the readers' feedback SR. They come back through the
archive's change feed like any new series, but they are not news: no model reads them, and no admin needs
them listed as "series no model accepts".

An object is ours when it names one of our device UIDs in its Contributing Equipment (IHE AIR), or, since
that UID changes with every retrained version and a version may be gone from the catalog (a database
rebuilt beside a kept archive), when it carries the series number and description that our writers give
it (inference/dicom_results/sr.py and seg.py, viewer/feedback/sr.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inference.dicom_results.seg import SEG_SERIES_NUMBER, SEG_SERIES_PREFIX
from inference.dicom_results.sr import SR_SERIES_NUMBER, SR_SERIES_PREFIX

FEEDBACK_SERIES_NUMBER = 9903  # beside the AI's SR (9901) and SEG (9902): after the acquired series
FEEDBACK_SERIES_DESCRIPTION = "AI feedback"
RESULT_MODALITIES = frozenset({"SR", "SEG"})
# Series number -> how our writer begins that series' description.
OWN_SERIES = {
    SR_SERIES_NUMBER: SR_SERIES_PREFIX,
    SEG_SERIES_NUMBER: SEG_SERIES_PREFIX,
    FEEDBACK_SERIES_NUMBER: FEEDBACK_SERIES_DESCRIPTION,
}


def made_by(tags: Mapping[str, Any], device_uids: set[str]) -> bool:
    """Whether an object names one of these algorithms in its Contributing Equipment (an AI result)."""
    equipment = tags.get("ContributingEquipmentSequence")
    if not isinstance(equipment, list):
        return False
    return any(isinstance(item, dict) and item.get("DeviceUID") in device_uids for item in equipment)


def is_own_object(tags: Mapping[str, Any], device_uids: set[str]) -> bool:
    """An SR or SEG this platform wrote (``tags``: an instance's attributes by keyword, as Orthanc's
    simplified tags give them; ``device_uids``: every version in the catalog)."""
    if str(tags.get("Modality") or "").strip().upper() not in RESULT_MODALITIES:
        return False
    if made_by(tags, device_uids):
        return True
    prefix = OWN_SERIES.get(_number(tags.get("SeriesNumber")))
    return prefix is not None and str(tags.get("SeriesDescription") or "").startswith(prefix)


def _number(value: Any) -> int:
    """A DICOM IS as a number; 0 (no series of ours) when it is missing or not one."""
    try:
        return int(str(value).strip())
    except ValueError:
        return 0
