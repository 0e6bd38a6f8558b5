"""Heatmaps as a fractional DICOM SEG: one segment per finding, one frame per segment on the source's grid.

A fractional PROBABILITY SEG, not a float Parametric Map: Orthanc's DICOMweb plugin 1.7 cannot serve float
frames (DESIGN.md), while 8-bit SEG frames go through every archive and viewer. A value v in 0..1 is stored
as round(255 v), so what a reader gets back is within 1/510 of what the model made.
"""

from __future__ import annotations

import logging
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid

from inference.dicom_results.algorithm import Algorithm
from inference.dicom_results.coding import (
    CHARACTER_SET,
    SEGMENT_CATEGORY,
    coding_schemes,
    finding_code,
    fit,
)
from inference.dicom_results.finding import FindingResult
from inference.dicom_results.source import on_grid, referenced_frame
from inference.dicom_results.times import settle, stamps

log = logging.getLogger("openaim.inference")

SEG_SERIES_NUMBER = 9902  # high, so that AI series sort after the acquired ones in a PACS series list
SEG_SERIES_PREFIX = "AI heatmaps: "  # then the algorithm's name (inference/own_objects.py reads it back)
MAX_FRACTIONAL_VALUE = 255


def build_seg(
    source: Dataset,
    findings: list[FindingResult],
    algorithm: Algorithm,
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    frame: int | None = None,
    series_number: int = SEG_SERIES_NUMBER,
    content_datetime: datetime | None = None,
) -> Dataset | None:
    """The SEG of every finding that has a heatmap, in the source's study; None when none has one.

    ``frame`` is the DICOM Frame Number (from 1) the model read in a multi-frame source. The UIDs come
    from the caller so that a job run twice writes the same instance. ``content_datetime`` (default: now)
    fixes Content Date/Time, for byte-identical re-runs.
    """
    mapped = [(finding, finding.heatmap) for finding in findings if finding.heatmap is not None]
    if not mapped:
        return None
    frame_number = referenced_frame(source, frame)
    positions = _plane_positions(source, frame_number)
    if positions is None and int(source.get("NumberOfFrames", 1)) > 1:
        # highdicom places a SEG frame in a multi-frame source by its plane position; without one (cine
        # ultrasound, some enhanced images) it cannot say which frame, and a SEG on the wrong frame is worse
        # than none. The SR still carries the findings.
        log.warning("no SEG: the multi-frame source gives no plane position for frame %s", frame_number)
        return None
    # (frames, Rows, Columns, segments): one frame, the segments along the last axis
    pixels = np.stack([on_grid(source, heatmap) for _, heatmap in mapped], axis=-1)
    concepts = [finding_code(finding.label, finding.display_name, finding.code) for finding, _ in mapped]
    when = content_datetime or datetime.now()
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=pixels[np.newaxis],
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=[
            _segment(number, finding, concept, algorithm, sop_instance_uid)
            for number, ((finding, _), concept) in enumerate(zip(mapped, concepts, strict=True), start=1)
        ],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        **algorithm.equipment(),
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=MAX_FRACTIONAL_VALUE,
        content_label="HEATMAP",
        content_description=fit(f"AI heatmaps: {algorithm.name}"),
        series_description=fit(f"{SEG_SERIES_PREFIX}{algorithm.name}"),
        plane_positions=positions,
        omit_empty_frames=False,  # one frame per segment, even an all-zero one: a reference never dangles
        contributing_equipment=[algorithm.contributing_equipment(when)],
        coding_schemes=coding_schemes(*concepts),
        specific_character_set=CHARACTER_SET,
        **stamps(when),
    )
    if "FrameOfReferenceUID" not in source:
        _without_frame_of_reference(seg, source)
    _derived_dimension_uid(seg)
    return settle(seg, when)


def _without_frame_of_reference(seg: Dataset, source: Dataset) -> None:
    """Two repairs for a SEG on a projection image (no frame of reference), such as a chest radiograph.

    Patient Orientation (General Image) is Type 2C there; highdicom leaves it out: copy the source's.
    highdicom writes the Pixel Measures with Pixel Spacing alone, which is valid without a frame of
    reference (Slice Thickness is 1C, CP 1426), but its own reader then refuses the SEG. The heatmap lies
    on the source's grid, whose spacing the source keeps, so the SEG goes without it.
    """
    seg.PatientOrientation = source.get("PatientOrientation", "")
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PixelMeasuresSequence" in shared and "SliceThickness" not in shared.PixelMeasuresSequence[0]:
        del shared.PixelMeasuresSequence


def _derived_dimension_uid(seg: Dataset) -> None:
    """highdicom's random Dimension Organization UID replaced by one derived from the SEG's own UID."""
    uid = generate_uid(entropy_srcs=[seg.SOPInstanceUID, "dimension organization"])
    for keyword in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in seg.get(keyword, []):
            item.DimensionOrganizationUID = uid


def segment_frames(seg: Dataset) -> dict[int, int]:
    """Segment Number -> the SEG frame number that holds it (the SR references frames, not segments)."""
    # With a single segment highdicom puts the identification in the shared functional groups.
    shared = seg.SharedFunctionalGroupsSequence[0]
    frames = {}
    for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        identification = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        frames[int(identification[0].ReferencedSegmentNumber)] = number
    return frames


def _segment(
    number: int, finding: FindingResult, concept: hd.sr.CodedConcept, algorithm: Algorithm, seg_uid: str
) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=fit(finding.display_name) or fit(finding.label),
        segmented_property_category=SEGMENT_CATEGORY,
        segmented_property_type=concept,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm.seg_identification(),
        tracking_id=fit(finding.label),  # the SR finds a finding's segment by it
        # the same instance makes the same tracking UID: a re-run job writes identical content
        tracking_uid=generate_uid(entropy_srcs=[seg_uid, finding.label]),
    )


def _plane_positions(source: Dataset, frame_number: int | None) -> list[hd.PlanePositionSequence] | None:
    """The read frame's position in a multi-frame source with a frame of reference, None where none is given.

    None for a single-frame source too: highdicom then aligns the SEG with the source image itself.
    """
    if frame_number is None or "FrameOfReferenceUID" not in source:
        return None
    groups = [
        source[keyword][index]
        for keyword, index in (
            ("PerFrameFunctionalGroupsSequence", frame_number - 1),
            ("SharedFunctionalGroupsSequence", 0),
        )
        if keyword in source and len(source[keyword].value) > index
    ]
    for group in groups:
        if "PlanePositionSequence" in group:
            position = group.PlanePositionSequence[0].ImagePositionPatient
            return [hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, position)]
    return None
