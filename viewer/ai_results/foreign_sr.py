"""Another vendor's TID 1500 Measurement Report as findings: one per measurement group.

A group's finding type (or tracking identifier) is its label; its image regions (SCOORD, pixel
coordinates) become shapes; its measurements and qualitative evaluations are listed as text. A probability
(DCM 122157 or a concept named like one), an operating threshold (DCM 122411), a Present/Absent decision
and a worklist priority are lifted into the shared fields, so the panel treats them as this platform's own.
Only 2D coordinates are drawn: a 3D region (SCOORD3D) is listed with a note.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
from pydicom import Dataset
from pydicom.uid import UID

from viewer.ai_results.foreign_images import PresentImages
from viewer.ai_results.view import FindingView, Overlay

SR_CLASSES: dict[str, Any] = {
    "1.2.840.10008.5.1.4.1.1.88.22": hd.sr.EnhancedSR,
    "1.2.840.10008.5.1.4.1.1.88.33": hd.sr.ComprehensiveSR,
    "1.2.840.10008.5.1.4.1.1.88.34": hd.sr.Comprehensive3DSR,
}
PROBABILITY = ("DCM", "122157")
THRESHOLD = ("DCM", "122411")
PRESENT = ("SCT", "52101004")
ABSENT = ("SCT", "272519000")
PRIORITY = ("SCT", "260870009")
NOT_DRAWN_3D = "3D coordinates are not drawn"
IN_SEGMENTATION = "the region is a segmentation (SEG) frame or segment; it is drawn with that SEG"

Group = (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
)


class UnsupportedObjectError(ValueError):
    """The object is not one this reader understands; the message says why, for the reader."""


@dataclass
class _Where:
    """Where a group lies: the image it is on, its shapes, and why something is not drawn."""

    instance_uid: str | None = None
    frame: int = 1
    overlays: list[Overlay] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SrContent:
    findings: list[FindingView]
    triage: str | None
    problems: list[str]


def measurement_report(dataset: Dataset) -> hd.sr.MeasurementReport:
    """The document's TID 1500 content, or UnsupportedObjectError saying why there is none."""
    sr_class = SR_CLASSES.get(str(dataset.get("SOPClassUID", "")))
    if sr_class is None:
        name = UID(str(dataset.get("SOPClassUID", ""))).name or "unknown"
        raise UnsupportedObjectError(f"an SR of class {name} cannot hold a TID 1500 measurement report")
    content = sr_class.from_dataset(dataset).content
    if not isinstance(content, hd.sr.MeasurementReport):
        raise UnsupportedObjectError("the SR is not a TID 1500 measurement report")
    return content


def sr_content(dataset: Dataset, result_id: str, images: PresentImages) -> SrContent:
    report = measurement_report(dataset)
    groups: list[Group] = [
        *report.get_image_measurement_groups(),
        *report.get_planar_roi_measurement_groups(),
        *report.get_volumetric_roi_measurement_groups(),
    ]
    findings: list[FindingView] = []
    problems: list[str] = []
    triage = None
    for index, group in enumerate(groups, start=1):
        finding_id = f"{result_id}-group-{index}"
        try:
            triage = triage or _priority(group)
            if _is_triage_only(group):
                continue
            findings.append(_finding(group, finding_id, index, images))
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as error:
            problems.append(f"measurement group {index} could not be read ({error.__class__.__name__})")
            findings.append(FindingView(finding_id, f"Measurement group {index}", None, note="unreadable"))
    return SrContent(findings, triage, problems)


def _finding(group: Group, finding_id: str, index: int, images: PresentImages) -> FindingView:
    label = _label(group, index)
    where = _where(group, finding_id, label, images)
    measurements = group.get_measurements()
    evaluations = group.get_qualitative_evaluations()
    return FindingView(
        id=finding_id,
        label=label,
        instance_uid=where.instance_uid,
        frame=where.frame,
        probability=_fraction(measurements, PROBABILITY, ("probability", "likelihood")),
        threshold=_fraction(measurements, THRESHOLD, ("threshold",)),
        positive=_decision(evaluations),
        overlays=tuple(where.overlays),
        note="; ".join(dict.fromkeys(where.notes)),
        details=_details(group, label, measurements, evaluations),
    )


def _label(group: Group, index: int) -> str:
    if group.finding_type is not None:
        return str(group.finding_type.meaning)
    return str(group.tracking_identifier or f"Measurement group {index}")


def _details(
    group: Group, label: str, measurements: Sequence[Any], evaluations: Sequence[Any]
) -> tuple[str, ...]:
    details = []
    if group.tracking_identifier and group.tracking_identifier != label:
        details.append(f"Tracking identifier: {group.tracking_identifier}")
    details += [f"Finding site: {site.value.meaning}" for site in group.finding_sites]
    for measurement in measurements:
        unit = measurement.unit.value
        value = f"{measurement.value:g}" + ("" if unit == "1" else f" {measurement.unit.meaning}")
        details.append(f"{measurement.name.meaning}: {value}")
    details += [f"{item.name.meaning}: {item.value.meaning}" for item in evaluations]
    return tuple(details)


def _is(code: Any, key: tuple[str, str]) -> bool:
    return (str(code.scheme_designator), str(code.value)) == key


def _fraction(measurements: Sequence[Any], key: tuple[str, str], words: tuple[str, ...]) -> float | None:
    """A value in 0..1 (a percentage is divided by 100); None when absent or out of range."""
    for measurement in measurements:
        meaning = str(measurement.name.meaning).lower()
        if not (_is(measurement.name, key) or any(word in meaning for word in words)):
            continue
        value = float(measurement.value) / (100.0 if measurement.unit.value == "%" else 1.0)
        if math.isfinite(value) and 0.0 <= value <= 1.0:
            return value
    return None


def _decision(evaluations: Sequence[Any]) -> bool | None:
    for evaluation in evaluations:
        if _is(evaluation.value, PRESENT):
            return True
        if _is(evaluation.value, ABSENT):
            return False
    return None


def _priority(group: Group) -> str | None:
    evaluations: list[Any] = group.get_qualitative_evaluations()
    for evaluation in evaluations:
        if _is(evaluation.name, PRIORITY):
            return str(evaluation.value.meaning)
    return None


def _is_triage_only(group: Group) -> bool:
    """A group that only carries the study's priority is the result's triage, not a finding."""
    evaluations = group.get_qualitative_evaluations()
    return (
        group.finding_type is None
        and not group.get_measurements()
        and len(evaluations) > 0
        and all(_is(item.name, PRIORITY) for item in evaluations)
    )


def _where(group: Group, finding_id: str, label: str, images: PresentImages) -> _Where:
    if isinstance(group, hd.sr.MeasurementsAndQualitativeEvaluations):
        where = _Where()
        for image in group.source_images[:1]:
            _anchor(where, image, images)
        return where
    roi = group.roi
    if isinstance(roi, hd.sr.ImageRegion):
        return _regions([roi], finding_id, label, images)
    if isinstance(roi, list):
        return _regions(roi, finding_id, label, images)
    if isinstance(roi, hd.sr.ImageRegion3D):
        return _Where(notes=[NOT_DRAWN_3D])
    if isinstance(roi, hd.sr.VolumeSurface):
        where = _Where(notes=[NOT_DRAWN_3D])
        for source in roi.source_images_for_segmentation[:1]:
            _anchor(where, source, images)
        return where
    return _Where(notes=[IN_SEGMENTATION])


def _anchor(where: _Where, source: Any, images: PresentImages) -> None:
    """Point the finding at a referenced image, or say that the image is missing."""
    uid = str(source.referenced_sop_instance_uid)
    frame = (source.referenced_frame_numbers or [1])[0]
    where.instance_uid, where.frame = uid, frame
    if not images.has(uid, frame):
        where.notes.append(images.note(uid, frame))


def _regions(regions: list[Any], finding_id: str, label: str, images: PresentImages) -> _Where:
    where = _Where()
    for region in regions:
        source = region.ContentSequence[0]
        uid = str(source.referenced_sop_instance_uid)
        frame = (source.referenced_frame_numbers or [1])[0]
        if where.instance_uid is None:
            where.instance_uid, where.frame = uid, frame
        if not images.has(uid, frame):
            where.notes.append(images.note(uid, frame))
            continue
        base = f"{finding_id}-region-{len(where.overlays) + 1}"
        where.overlays += _shapes(region, base, uid, frame, label)
    return where


def _shapes(region: Any, base: str, uid: str, frame: int, label: str) -> list[Overlay]:
    """SCOORD graphic data (column, row pixel coordinates) as the shared overlay shapes."""
    points = tuple((float(x), float(y)) for x, y in region.value)
    kind = hd.sr.GraphicTypeValues(region.graphic_type)
    common: dict[str, Any] = {"instance_uid": uid, "frame": frame, "label": label}
    if kind == hd.sr.GraphicTypeValues.POINT:
        return [Overlay(id=base, kind="point", point=points[0], **common)]
    if kind == hd.sr.GraphicTypeValues.MULTIPOINT:
        return [Overlay(id=f"{base}-{n}", kind="point", point=p, **common) for n, p in enumerate(points, 1)]
    if kind == hd.sr.GraphicTypeValues.CIRCLE:
        (cx, cy), (px, py) = points[0], points[1]
        r = math.hypot(px - cx, py - cy)
        axes = ((cx - r, cy), (cx + r, cy), (cx, cy - r), (cx, cy + r))
        return [Overlay(id=base, kind="ellipse", points=axes, closed=True, **common)]
    if kind == hd.sr.GraphicTypeValues.ELLIPSE:
        return [Overlay(id=base, kind="ellipse", points=points, closed=True, **common)]
    closed = len(points) > 2 and points[0] == points[-1]
    box = _box(points) if closed else None
    if box is not None:
        return [Overlay(id=base, kind="box", rect=box, closed=True, **common)]
    return [Overlay(id=base, kind="polyline", points=points, closed=closed, **common)]


def _box(points: tuple[tuple[float, float], ...]) -> tuple[float, float, float, float] | None:
    """A closed 5-point axis-aligned polyline (how SR writes a rectangle) as x0, y0, x1, y1."""
    if len(points) != 5:
        return None
    xs = {x for x, _ in points}
    ys = {y for _, y in points}
    edges_axis_aligned = all(a[0] == b[0] or a[1] == b[1] for a, b in itertools.pairwise(points))
    if len(xs) != 2 or len(ys) != 2 or not edges_axis_aligned:
        return None
    return (min(xs), min(ys), max(xs), max(ys))
