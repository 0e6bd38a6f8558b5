"""DICOM UIDs as they may appear in a URL: digits and dots, at most 64 characters (PS3.5 9.1).

Validated at the edge so that a malformed UID is refused (422) before it can reach Orthanc or a path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from openaim.uids import UID_PATTERN

StudyUID = Annotated[str, Path(pattern=UID_PATTERN, max_length=64, description="StudyInstanceUID")]
SeriesUID = Annotated[str, Path(pattern=UID_PATTERN, max_length=64, description="SeriesInstanceUID")]
InstanceUID = Annotated[str, Path(pattern=UID_PATTERN, max_length=64, description="SOPInstanceUID")]
OptionalSeriesUID = Annotated[str | None, Query(pattern=UID_PATTERN, max_length=64)]
FrameList = Annotated[str, Path(pattern=r"^[1-9][0-9]{0,5}(,[1-9][0-9]{0,5}){0,255}$")]
