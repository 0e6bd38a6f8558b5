"""A model's result as a TID 1500 Measurement Report in a Comprehensive 3D SR, readable by any PACS.

The algorithm is the device observer (TID 1004). The measurement groups, each naming the algorithm
(TID 4019) and the image it read:

- one image-level group (TID 1501) per finding, tracking identifier = the output label: the finding
  type, the probability (DCM 122157, unit UCUM "1"), the operating threshold (DCM 122411, same unit) and
  the decision as a qualitative evaluation ``<finding> = Present | Absent`` (SCT 52101004 / 272519000);
- one planar ROI group (TID 1410) per box: the finding type and the box as a closed 5-point POLYLINE
  (SR has no rectangle), tracking identifier ``<label> box <n>``;
- one planar ROI group per heatmap when a SEG was made: the finding type and the SEG frame that holds
  the finding's segment (tracking ID = the output label);
- one image-level group ``triage`` holding the study's worklist priority: the highest
  triage rule that fired, or routine when a model with triage rules raised none.

The finding is never a qualitative evaluation named ``Finding`` (DCM 121071): highdicom takes such an item
for the group's finding type and drops it on read-back (DESIGN.md).
"""

from __future__ import annotations

from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from inference.dicom_results.algorithm import Algorithm
from inference.dicom_results.coding import (
    ABSENT,
    CHARACTER_SET,
    PRESENT,
    PRIORITY,
    PROBABILITY,
    THRESHOLD,
    UNITLESS,
    coding_schemes,
    finding_code,
    fit,
    triage_code,
)
from inference.dicom_results.finding import Box, FindingResult
from inference.dicom_results.seg import segment_frames
from inference.dicom_results.source import referenced_frame
from inference.dicom_results.times import settle, stamps

SR_SERIES_NUMBER = 9901  # beside the SEG's 9902: high, so AI series sort after the acquired ones
SR_SERIES_PREFIX = "AI results: "  # then the algorithm's name (inference/own_objects.py reads it back)
TRIAGE_TRACKING_ID = "triage"

Group = hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations


def build_sr(
    source: Dataset,
    findings: list[FindingResult],
    triage: str | None,
    algorithm: Algorithm,
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    frame: int | None = None,
    seg: Dataset | None = None,
    series_number: int = SR_SERIES_NUMBER,
    content_datetime: datetime | None = None,
) -> Dataset:
    """The SR of one model run on one image, in the image's study.

    ``frame`` is the DICOM Frame Number (from 1) the model read in a multi-frame source; ``seg`` the SEG
    that ``build_seg`` made from the same findings, referenced per segment. The UIDs come from the caller,
    and every UID inside is derived from them, so that a job run twice writes the same instance;
    ``content_datetime`` (default: now) fixes Content Date/Time as well.
    """
    frames = _frame_list(referenced_frame(source, frame))
    groups = _groups(source, findings, triage, algorithm, frames, seg, sop_instance_uid)
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(algorithm),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
        referenced_images=_image_library(source, frames),
    )
    concepts = [finding_code(finding.label, finding.display_name, finding.code) for finding in findings]
    when = content_datetime or datetime.now()
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source] if seg is None else [source, seg],
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        **algorithm.equipment(),
        is_complete=True,
        is_final=False,  # PRELIMINARY: machine output that no reader has verified or signed
        is_verified=False,
        series_description=fit(f"{SR_SERIES_PREFIX}{algorithm.name}"),
        contributing_equipment=[algorithm.contributing_equipment(when)],
        coding_schemes=coding_schemes(*concepts),
        specific_character_set=CHARACTER_SET,
        **stamps(when),
    )
    return settle(sr, when)


def _groups(
    source: Dataset,
    findings: list[FindingResult],
    triage: str | None,
    algorithm: Algorithm,
    frames: list[int] | None,
    seg: Dataset | None,
    sr_uid: str,
) -> list[Group]:
    groups: list[Group] = []
    segments = _segment_numbers(findings, seg)
    # Built once and shared by every group: highdicom copies the whole tree when it makes the SR
    identification = algorithm.sr_identification()
    image = _source_for_group(source, frames)
    for finding in findings:
        concept = finding_code(finding.label, finding.display_name, finding.code)
        groups.append(_finding_group(finding, concept, identification, image, sr_uid))
        for number, box in enumerate(finding.boxes, start=1):
            tracking = _tracking(sr_uid, f"{finding.label} box {number}")
            region = _closed_polyline(source, box, frames)
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking,
                    referenced_region=region,
                    finding_type=concept,
                    algorithm_id=identification,
                )
            )
        if seg is not None and finding.label in segments:
            groups.append(
                _segment_group(source, finding, concept, identification, frames, seg, segments, sr_uid)
            )
    if triage is not None:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(sr_uid, TRIAGE_TRACKING_ID),
                algorithm_id=identification,
                source_images=[image],
                qualitative_evaluations=[hd.sr.QualitativeEvaluation(PRIORITY, triage_code(triage))],
            )
        )
    return groups


def _finding_group(
    finding: FindingResult,
    concept: hd.sr.CodedConcept,
    identification: hd.sr.AlgorithmIdentification,
    image: hd.sr.SourceImageForMeasurementGroup,
    sr_uid: str,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(sr_uid, finding.label),
        finding_type=concept,
        algorithm_id=identification,
        source_images=[image],
        measurements=[
            hd.sr.Measurement(name=PROBABILITY, value=finding.probability, unit=UNITLESS),
            hd.sr.Measurement(name=THRESHOLD, value=finding.threshold, unit=UNITLESS),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(concept, PRESENT if finding.positive else ABSENT),
        ],
    )


def _segment_group(
    source: Dataset,
    finding: FindingResult,
    concept: hd.sr.CodedConcept,
    identification: hd.sr.AlgorithmIdentification,
    frames: list[int] | None,
    seg: Dataset,
    segments: dict[str, int],
    sr_uid: str,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    number = segments[finding.label]
    reference = hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        frame_number=segment_frames(seg)[number],
        segment_number=number,
        source_image=hd.sr.SourceImageForSegmentation.from_source_image(source, frames),
    )
    # PS3.3 C.18.4 (Image Reference Macro): Referenced Segment Number shall not be present beside a
    # Referenced Frame Number, and highdicom writes both. The SEG frame names its one segment anyway.
    del reference[0].ReferencedSOPSequence[0].ReferencedSegmentNumber
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(sr_uid, f"{finding.label} heatmap"),
        referenced_segment=reference,
        finding_type=concept,
        algorithm_id=identification,
    )


def _segment_numbers(findings: list[FindingResult], seg: Dataset | None) -> dict[str, int]:
    """Output label -> SEG segment number, matched by the tracking ID that ``build_seg`` writes."""
    if seg is None:
        return {}
    by_tracking_id = {str(item.TrackingID): int(item.SegmentNumber) for item in seg.SegmentSequence}
    return {
        finding.label: by_tracking_id[fit(finding.label)]
        for finding in findings
        if fit(finding.label) in by_tracking_id
    }


def _closed_polyline(source: Dataset, box: Box, frames: list[int] | None) -> hd.sr.ImageRegion:
    """A box as SR draws one: a POLYLINE of its four corners with the first repeated to close it.

    Corners are clipped to the image: a box cannot reach outside the pixels it was drawn on.
    """
    x0, x1 = sorted(np.clip([box[0], box[2]], 0.0, float(source.Columns)))
    y0, y1 = sorted(np.clip([box[1], box[3]], 0.0, float(source.Rows)))
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float64)
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=corners,
        source_image=hd.sr.SourceImageForRegion.from_source_image(source, frames),
    )


# What highdicom's TID 1600 entry reads from an image, by the modality families it describes
# (highdicom.sr.templates.ImageLibraryEntryDescriptors): TID 1603 for projection radiography, TID 1604 for
# cross-sectional images. An attribute absent or empty there raises AttributeError or IndexError.
_LIBRARY_NEEDS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("CR", "DX", "IO", "MG", "PX", "RF", "RG", "XA"), ("ImagerPixelSpacing", "PatientOrientation")
    ),
    **dict.fromkeys(
        ("CT", "MR", "PT"),
        ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness"),
    ),
}
_TWO_VALUED = ("ImagerPixelSpacing", "PatientOrientation", "PixelSpacing")


def _image_library(source: Dataset, frames: list[int] | None) -> list[Dataset] | None:
    """The source for the TID 1600 Image Library when highdicom can describe it, else no library.

    The library is optional and the SCOORDs reference the image anyway, so a source highdicom cannot
    describe costs the library, never the SR. Real CR and DX files carry Pixel Spacing, Imager Pixel
    Spacing, both or neither, and Patient Orientation may be empty (Type 2); highdicom reads Imager Pixel
    Spacing and both orientation values unconditionally. An enhanced multi-frame image keeps its geometry
    in functional groups, where highdicom does not look.
    """
    if frames is not None:
        return None
    needs = _LIBRARY_NEEDS.get(str(source.get("Modality", "")), ())
    return [source] if all(_has_values(source, keyword) for keyword in needs) else None


def _has_values(source: Dataset, keyword: str) -> bool:
    value = source.get(keyword)
    if value is None or value == "":
        return False
    if keyword in _TWO_VALUED:  # a single value reads as a str or a number, not a list
        return isinstance(value, list | MultiValue) and len(value) >= 2
    return True


def _observation_context(algorithm: Algorithm) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=algorithm.device_uid,
        name=algorithm.name,
        manufacturer_name=algorithm.vendor,
        model_name=algorithm.name,
        serial_number=algorithm.model_id,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _source_for_group(source: Dataset, frames: list[int] | None) -> hd.sr.SourceImageForMeasurementGroup:
    return hd.sr.SourceImageForMeasurementGroup.from_source_image(source, frames)


def _tracking(sr_uid: str, identifier: str) -> hd.sr.TrackingIdentifier:
    # derived, not random: the same SR instance always tracks its findings under the same UIDs
    return hd.sr.TrackingIdentifier(
        uid=generate_uid(entropy_srcs=[sr_uid, identifier]), identifier=identifier
    )


def _frame_list(frame_number: int | None) -> list[int] | None:
    return None if frame_number is None else [frame_number]
