"""DICOM UIDs as text: digits and dots, no leading zeros in a component, at most 64 characters
(PS3.5 9.1). One rule for the whole platform: URLs, uploads, seeding and model manifests."""

from __future__ import annotations

import re

UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$"
_UID_RE = re.compile(UID_PATTERN)


def is_uid(value: str) -> bool:
    return len(value) <= 64 and _UID_RE.fullmatch(value) is not None
