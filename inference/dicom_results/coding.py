"""Codes and strings as the SR and SEG write them: the concepts used, the private scheme, and VR limits.

Manifest text (names, vendors, display names) is free text of up to 200 characters, while most DICOM
string attributes are LO (64 characters, no backslash). A value that breaks a VR limit makes the whole
object invalid, so every manifest string is fitted here before it reaches a dataset. Nothing is escaped:
pydicom encodes the characters (the objects are written as UTF-8, ``ISO_IR 192``), and HTML escaping is
the viewer's job at display time.
"""

from __future__ import annotations

import unicodedata

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from inference.manifest import Code

# Private concepts (those DICOM, SNOMED CT and LOINC lack) are coded in this scheme. PS3.3 8.2: a private
# Coding Scheme Designator starts with "99" and is declared in the Coding Scheme Identification Sequence.
PRIVATE_SCHEME = "99OPENAIM"
CHARACTER_SET = "ISO_IR 192"  # UTF-8: any display name a vendor writes can be encoded

LO_BYTES = 64  # LO, and CodeMeaning (LO): 64 characters; counted here in UTF-8 bytes, the strictest reading
TRUNCATED = "…"

# The concepts of the report (PS3.16 code tables, as pydicom ships them).
PROBABILITY = codes.DCM.Probability  # DCM 122157
THRESHOLD = codes.DCM.ThresholdValue  # DCM 122411
# UCUM "1" (CID 7181 "no units"): a probability is a dimensionless fraction 0..1, and the concept name
# already says that it is a probability. "{probability}" would mean the same to UCUM (an annotation is
# unit 1) but is listed in no DICOM context group, so a consumer that matches units by code would not
# know it.
UNITLESS = codes.UCUM.NoUnits
PRESENT = codes.SCT.Present  # SCT 52101004
ABSENT = codes.SCT.Absent  # SCT 272519000
PRIORITY = CodedConcept("260870009", "SCT", "Priority")  # SCT "Priority (attribute)"
# CID 7150 (Segmentation Property Categories): a finding's probability map segments abnormal structure
SEGMENT_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure  # SCT 49755003


def triage_code(priority: str) -> CodedConcept:
    """A worklist priority (urgent, priority, routine): DICOM codes no such levels, so they are private."""
    value = fit(priority, 16).lower()
    return CodedConcept(value, PRIVATE_SCHEME, fit(priority.capitalize()))


def finding_code(label: str, display_name: str, code: Code | None) -> CodedConcept:
    """The manifest's code for a finding, or a private one made from its label."""
    if code is None:
        return CodedConcept(fit(label, LO_BYTES), PRIVATE_SCHEME, fit(display_name))
    return CodedConcept(fit(code.value, LO_BYTES), code.scheme, fit(code.meaning))


def coding_schemes(*concepts: CodedConcept) -> list[CodingSchemeIdentificationItem]:
    """Declarations for the private schemes used: always ours, plus any other ``99`` scheme a vendor used."""
    private = {PRIVATE_SCHEME} | {
        concept.scheme_designator for concept in concepts if concept.scheme_designator.startswith("99")
    }
    return [
        CodingSchemeIdentificationItem(
            designator=designator,
            name=f"{designator} private codes",
            responsible_organization="openaim" if designator == PRIVATE_SCHEME else None,
        )
        for designator in sorted(private)
    ]


def fit(value: str, max_bytes: int = LO_BYTES) -> str:
    """A manifest string made valid for a single-valued short DICOM string (LO, SH, CodeMeaning).

    Control characters become spaces and a backslash (the DICOM value delimiter) becomes a slash;
    a value longer than the limit is cut at a character boundary and ends with an ellipsis.
    """
    text = "".join(" " if unicodedata.category(char) == "Cc" else char for char in value)
    text = text.replace("\\", "/").strip()
    if len(text.encode()) <= max_bytes:
        return text
    room = max_bytes - len(TRUNCATED.encode())
    cut = text.encode()[:room].decode(errors="ignore").rstrip()
    return cut + TRUNCATED
