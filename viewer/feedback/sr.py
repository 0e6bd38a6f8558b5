"""A reader's second-reader feedback as a DICOM SR, so that it outlives this platform (IHE AIR spirit).

One Comprehensive 3D SR per reader, study and state of that reader's feedback, in the study of the images,
in a series of its own ("AI feedback"). It is a TID 1500 Measurement Report whose observer is the reader
(a person, TID 1003), so any TID 1500 reader can list it. Its measurement groups:

- one image-level group (TID 1501) per AI finding judged: the finding type and Tracking UID copied from
  the AI SR's own group (so the two documents name the same finding), the verdict and, for a reject, the
  reason as qualitative evaluations, the reader's comment (DCM 121106), the AI SR as Source Document
  (DCM 121335, COMPOSITE) and the algorithm that made it (DCM 111001 name, 111003 version, 121012 device
  UID); a wrong-location verdict adds a planar ROI group with the box the reader drew;
- one planar ROI group per finding the AI missed: the reader's box as a closed 5-point POLYLINE (SR has
  no rectangle) on the image and frame it was drawn on, reason "false negative", the comment;
- one image-level group "study": whether the AI's triage was right, whether a discrepancy review was
  asked for, the reader's overall impression (DCM 121073: SCT Normal / Abnormal) and the study comment.

DICOM has no codes for accepting or rejecting an AI result (PS3.16 as pydicom 3.0 ships it; 122775 /
122776 "Agreement / Disagreement with prior findings" are about prior studies), so the verdicts, the
reasons and the two study questions are private codes in the scheme ``99OPENAIM`` (``PRIVATE`` below),
declared in the Coding Scheme Identification Sequence; the answers are SNOMED CT Yes / No.

The SOP Instance UID is derived from the reader, the study and the versions of the feedback it holds: the
same state published twice is the same instance (Orthanc keeps the first), and any new version makes a
new one. Content and instance dates are those of the newest row, so the bytes repeat as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from inference.dicom_results.coding import CHARACTER_SET, PRIVATE_SCHEME, coding_schemes, fit
from inference.dicom_results.source import referenced_frame
from inference.dicom_results.sr import _closed_polyline as closed_polyline
from inference.dicom_results.times import settle, stamps
from inference.own_objects import FEEDBACK_SERIES_DESCRIPTION, FEEDBACK_SERIES_NUMBER
from viewer.feedback.records import Reason, Verdict
from viewer.reading.reads import Impression

PRIVATE = PRIVATE_SCHEME
# Ours, as the watcher and the Models page recognise them (inference/own_objects.py)
SERIES_NUMBER = FEEDBACK_SERIES_NUMBER
SERIES_DESCRIPTION = FEEDBACK_SERIES_DESCRIPTION
MANUFACTURER = "openaim"
MODEL_NAME = "openaim viewer"

ASSESSMENT = hd.sr.CodedConcept("ai-assessment", PRIVATE, "Reader assessment of AI finding")
VERDICTS = {
    Verdict.AGREE: hd.sr.CodedConcept("accept", PRIVATE, "Accepted"),
    Verdict.DISAGREE: hd.sr.CodedConcept("reject", PRIVATE, "Rejected"),
    Verdict.UNSURE: hd.sr.CodedConcept("unsure", PRIVATE, "Uncertain"),
}
REASON = hd.sr.CodedConcept("ai-reason", PRIVATE, "Reason for assessment of AI finding")
REASONS = {
    Reason.FALSE_POSITIVE_ARTEFACT: hd.sr.CodedConcept("fp-artefact", PRIVATE, "False positive: artefact"),
    Reason.FALSE_POSITIVE_NORMAL_VARIANT: hd.sr.CodedConcept(
        "fp-variant", PRIVATE, "False positive: normal variant"
    ),
    Reason.FALSE_POSITIVE_OTHER_FINDING: hd.sr.CodedConcept(
        "fp-other", PRIVATE, "False positive: other finding"
    ),
    Reason.WRONG_LOCATION: hd.sr.CodedConcept("wrong-location", PRIVATE, "Wrong location"),
    Reason.FALSE_NEGATIVE: hd.sr.CodedConcept("false-negative", PRIVATE, "False negative"),
}
MISSED_FINDING = hd.sr.CodedConcept("missed-finding", PRIVATE, "Finding missed by AI")
TRIAGE_CORRECT = hd.sr.CodedConcept("triage-correct", PRIVATE, "AI triage correct")
REVIEW_REQUESTED = hd.sr.CodedConcept("review-requested", PRIVATE, "Discrepancy review requested")
IMPRESSIONS = {Impression.NORMAL: codes.SCT.Normal, Impression.ABNORMAL: codes.SCT.Abnormal}
STUDY_TRACKING_ID = "study"

CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS
Box = tuple[float, float, float, float]
Group = hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations


@dataclass(frozen=True)
class JudgedAlgorithm:
    """The algorithm whose result was judged, as recorded with the feedback (IHE AIR)."""

    name: str | None
    version: str | None
    device_uid: str | None


@dataclass(frozen=True)
class Mark:
    """A box the reader drew: ``image`` is the image's attributes (pixel data not needed)."""

    image: Dataset
    frame: int
    box: Box


@dataclass(frozen=True)
class FindingAssessment:
    """The reader's verdict on one finding of one AI result SR."""

    result_sr: Dataset
    label: str  # the tracking identifier: the AI SR group's (its output label), else the finding's name
    finding_type: hd.sr.CodedConcept
    tracking_uid: str | None  # the AI SR group's, so both documents track the same finding
    verdict: Verdict
    reason: Reason | None
    comment: str | None
    algorithm: JudgedAlgorithm
    location: Mark | None = None  # wrong location: where the reader says the finding is


@dataclass(frozen=True)
class MissedFinding:
    mark: Mark
    comment: str | None


@dataclass(frozen=True)
class StudyAssessment:
    triage_correct: bool | None  # None: not answered
    review_requested: bool | None
    comment: str | None
    impression: Impression | None
    result_srs: Sequence[Dataset] = ()  # the AI results whose triage was judged


@dataclass(frozen=True)
class Placement:
    """Where and when the SR goes: its UIDs and number, and the one time every stamp takes."""

    sop_instance_uid: str
    series_instance_uid: str
    instance_number: int
    content_datetime: datetime


def feedback_uids(user_id: int, study_uid: str, versions: Sequence[tuple[str, int]]) -> tuple[str, str]:
    """(SOP Instance UID, Series Instance UID): the series is one per reader and study, the instance one
    per state of the reader's feedback, ``versions`` being every (target, version) it holds."""
    state = [f"{target}={version}" for target, version in sorted(versions)]
    instance = generate_uid(entropy_srcs=["openaim feedback SR", str(user_id), study_uid, *state])
    series = generate_uid(entropy_srcs=["openaim feedback series", str(user_id), study_uid])
    return instance, series


def build_feedback_sr(
    reader_name: str,
    findings: Sequence[FindingAssessment],
    missed: Sequence[MissedFinding],
    study: StudyAssessment | None,
    placement: Placement,
) -> Dataset:
    """The SR of one reader's feedback on one study. Its evidence is the AI SRs judged and the images
    marked; the first of them gives the patient and study attributes, so nothing is added that the
    study does not already have."""
    evidence = _evidence(findings, missed, study)
    if not evidence:
        raise ValueError("feedback with neither an AI result nor an image to reference")
    uid = placement.sop_instance_uid
    groups: list[Group] = []
    for assessment in findings:
        groups += _finding_groups(assessment, uid)
    groups += [_missed_group(item, number, uid) for number, item in enumerate(missed, start=1)]
    if study is not None:
        groups.append(_study_group(study, uid))
    report = hd.sr.MeasurementReport(
        observation_context=_reader(reader_name),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    when = placement.content_datetime
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=placement.series_instance_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=uid,
        instance_number=placement.instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        is_complete=True,
        is_final=False,  # the reader's working feedback, not a signed report
        is_verified=False,
        series_description=SERIES_DESCRIPTION,
        coding_schemes=coding_schemes(*(item.finding_type for item in findings)),
        specific_character_set=CHARACTER_SET,
        **stamps(when),
    )
    return settle(sr, when)


def _evidence(
    findings: Sequence[FindingAssessment], missed: Sequence[MissedFinding], study: StudyAssessment | None
) -> list[Dataset]:
    """The AI SRs first (complete objects, with the patient and study attributes), then the marked
    images; each once."""
    srs = [item.result_sr for item in findings] + list(study.result_srs if study else ())
    marks = [item.location for item in findings if item.location] + [item.mark for item in missed]
    images = [mark.image for mark in marks]
    unique: dict[str, Dataset] = {}
    for dataset in [*srs, *images]:
        unique.setdefault(str(dataset.SOPInstanceUID), dataset)
    return list(unique.values())


def _reader(name: str) -> hd.sr.ObservationContext:
    person = hd.sr.PersonObserverIdentifyingAttributes(name=person_name(name))
    return hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Person, observer_identifying_attributes=person
        )
    )


def person_name(display_name: str) -> str:
    """A display name as a DICOM PN: all of it the family-name component, the trailing caret saying
    that it is one component on purpose ("Dr A. Smith^"), with the PN delimiters taken out."""
    text = display_name.replace("^", " ").replace("=", " ")
    return f"{fit(text)}^"


def _finding_groups(assessment: FindingAssessment, sr_uid: str) -> list[Group]:
    evaluations = [hd.sr.QualitativeEvaluation(ASSESSMENT, VERDICTS[assessment.verdict])]
    if assessment.reason is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(REASON, REASONS[assessment.reason]))
    identifier = fit(assessment.label)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=assessment.tracking_uid or _derived(sr_uid, identifier), identifier=identifier
        ),
        finding_type=assessment.finding_type,
        qualitative_evaluations=evaluations,
    )
    group[0].ContentSequence.extend(_comment(assessment.comment))
    group[0].ContentSequence.append(_source_document(assessment.result_sr))
    group[0].ContentSequence.extend(_algorithm_items(assessment.algorithm))
    groups: list[Group] = [group]
    if assessment.location is not None:
        location = f"{identifier} location by reader"
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=_derived(sr_uid, location), identifier=fit(location)
                ),
                referenced_region=_region(assessment.location),
                finding_type=assessment.finding_type,
            )
        )
    return groups


def _missed_group(
    missed: MissedFinding, number: int, sr_uid: str
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    identifier = f"missed finding {number}"
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_derived(sr_uid, identifier), identifier=identifier),
        referenced_region=_region(missed.mark),
        finding_type=MISSED_FINDING,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(REASON, REASONS[Reason.FALSE_NEGATIVE])],
    )
    group[0].ContentSequence.extend(_comment(missed.comment))
    return group


def _study_group(study: StudyAssessment, sr_uid: str) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    evaluations = []
    if study.triage_correct is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(TRIAGE_CORRECT, _yes_no(study.triage_correct)))
    if study.review_requested is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(REVIEW_REQUESTED, _yes_no(study.review_requested)))
    if study.impression is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(codes.DCM.Impression, IMPRESSIONS[study.impression]))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_derived(sr_uid, STUDY_TRACKING_ID), identifier=STUDY_TRACKING_ID
        ),
        qualitative_evaluations=evaluations,
    )
    group[0].ContentSequence.extend(_comment(study.comment))
    group[0].ContentSequence.extend(_source_document(sr) for sr in study.result_srs)
    return group


def _comment(text: str | None) -> list[hd.sr.TextContentItem]:
    if not text:
        return []
    return [hd.sr.TextContentItem(name=codes.DCM.Comment, value=text, relationship_type=CONTAINS)]


def _source_document(sr: Dataset) -> hd.sr.CompositeContentItem:
    """The AI result SR judged (DCM 121335 "Source Document", by SOP Class and Instance UID)."""
    return hd.sr.CompositeContentItem(
        name=codes.DCM.SourceDocument,
        referenced_sop_class_uid=str(sr.SOPClassUID),
        referenced_sop_instance_uid=str(sr.SOPInstanceUID),
        relationship_type=CONTAINS,
    )


def _algorithm_items(algorithm: JudgedAlgorithm) -> list[hd.sr.ContentItem]:
    items: list[hd.sr.ContentItem] = []
    if algorithm.name:
        items.append(_text(codes.DCM.AlgorithmName, algorithm.name))
    if algorithm.version:
        items.append(_text(codes.DCM.AlgorithmVersion, algorithm.version))
    if algorithm.device_uid:
        items.append(
            hd.sr.UIDRefContentItem(
                name=codes.DCM.DeviceObserverUID, value=algorithm.device_uid, relationship_type=CONTAINS
            )
        )
    return items


def _text(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=fit(value), relationship_type=CONTAINS)


def _region(mark: Mark) -> hd.sr.ImageRegion:
    """The box as the AI SR draws one (a closed 5-point POLYLINE, clipped to the image)."""
    frame = referenced_frame(mark.image, mark.frame)
    return closed_polyline(mark.image, mark.box, None if frame is None else [frame])


def _yes_no(answer: bool) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept.from_code(codes.SCT.Yes if answer else codes.SCT.No)


def _derived(sr_uid: str, identifier: str) -> str:
    return generate_uid(entropy_srcs=[sr_uid, identifier])
