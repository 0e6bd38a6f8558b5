"""The attributes of an image that the viewport's description of a series needs, and nothing else.

Kept apart from ``images.py`` (which builds the description) so that the frame source, which parses every
file of a series as it loads it, can keep the same few attributes of each file: the description then needs
no second reading of the series by Orthanc (``FrameSource.series_headers``).
"""

from __future__ import annotations

from pydicom import Dataset

# The attributes read from each instance: converting only these keeps a 200-slice CT's description (2.7 MB
# of DICOM JSON) to a few milliseconds of Python, and a kept header to a few kilobytes.
WANTED_TAGS = frozenset(
    {
        "00080005", "00080018", "00080020", "00080060", "00081030", "0008103E", "00100010", "00100020",
        "00181164", "00200011", "00200013", "00200032", "00200037", "00280002", "00280004", "00280006",
        "00280008", "00280010", "00280011", "00280030", "00280100", "00280101", "00280102", "00280103",
        "00281050", "00281051", "00281052", "00281053", "00281056", "52009229", "52009230",
    }
)  # fmt: skip
PER_FRAME_GROUPS = "52009230"
WANTED = frozenset(int(tag, 16) for tag in WANTED_TAGS)


def header_of(ds: Dataset) -> Dataset:
    """The wanted attributes of a parsed file (its per-frame groups: the first frame's only)."""
    kept = Dataset()
    for tag in sorted(WANTED & set(ds.keys())):
        kept.add(ds[tag])
    per_frame = kept.get(int(PER_FRAME_GROUPS, 16))
    if per_frame is not None and len(per_frame.value) > 1:
        kept.PerFrameFunctionalGroupsSequence = per_frame.value[:1]
    return kept
