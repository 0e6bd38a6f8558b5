"""Another vendor's DICOM SEG as findings (one per segment) and mask overlays (one per SEG frame).

Each SEG frame holds one segment on one source image frame; the server turns it into an RGBA PNG in the
segment's colour that the viewport stretches over the whole source image. Binary, fractional and
overlapping segments are all one frame per (segment, source frame), so they are drawn alike.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.pixels import pixel_array

from viewer.ai_results.foreign_images import PresentImages
from viewer.ai_results.view import FindingView, Overlay

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
BINARY_ALPHA = 180  # a binary mask's opacity: the source image stays visible under it
# Distinct colours for segments that recommend none (by segment number, cycling).
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
)


@dataclass(frozen=True)
class SegFrame:
    """Where one SEG frame lies: its segment and the source image frame it covers."""

    number: int  # 1-based SEG frame number
    segment: int
    source_uid: str | None  # None: the SEG does not say (e.g. it references a volume only)
    source_frame: int = 1


def seg_frames(dataset: Dataset) -> list[SegFrame]:
    """Every frame's segment and source image, from the Per-frame (or Shared) Functional Groups."""
    shared = (dataset.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    single_source = _single_referenced_instance(dataset)
    frames = []
    for number, group in enumerate(dataset.get("PerFrameFunctionalGroupsSequence") or [], start=1):
        identification = group.get("SegmentIdentificationSequence") or shared.get(
            "SegmentIdentificationSequence"
        )
        segment = int(identification[0].ReferencedSegmentNumber)
        source = _source_image(group) or _source_image(shared)
        if source is None:
            frames.append(SegFrame(number, segment, single_source))
        else:
            frames.append(SegFrame(number, segment, source[0], source[1]))
    return frames


def _source_image(group: Dataset) -> tuple[str, int] | None:
    for derivation in group.get("DerivationImageSequence") or []:
        for source in derivation.get("SourceImageSequence") or []:
            frame_numbers = source.get("ReferencedFrameNumber")
            if frame_numbers is None or frame_numbers == "":
                frame = 1
            else:
                frame = int(frame_numbers[0] if isinstance(frame_numbers, list | tuple) else frame_numbers)
            return str(source.ReferencedSOPInstanceUID), frame
    return None


def _single_referenced_instance(dataset: Dataset) -> str | None:
    """The source image when the SEG references exactly one (then each frame lies on it)."""
    instances = [
        str(item.ReferencedSOPInstanceUID)
        for series in dataset.get("ReferencedSeriesSequence") or []
        for item in series.get("ReferencedInstanceSequence") or []
    ]
    return instances[0] if len(instances) == 1 else None


def segment_colour(dataset: Dataset, segment_number: int) -> tuple[int, int, int]:
    """The segment's recommended display colour (CIELab, converted to sRGB), else a palette colour."""
    for item in dataset.get("SegmentSequence") or []:
        if int(item.SegmentNumber) == segment_number and "RecommendedDisplayCIELabValue" in item:
            lab = [int(value) for value in item.RecommendedDisplayCIELabValue]
            return hd.color.CIELabColor.from_dicom_value(lab).to_rgb(clip=True)
    return PALETTE[(segment_number - 1) % len(PALETTE)]


def frame_colour(dataset: Dataset, seg_frame: int) -> tuple[int, int, int]:
    """The colour of the segment that SEG frame ``seg_frame`` (1-based) holds."""
    frames = seg_frames(dataset)
    if not 1 <= seg_frame <= len(frames):
        raise ValueError(f"the SEG has no frame {seg_frame}")
    return segment_colour(dataset, frames[seg_frame - 1].segment)


def number_of_frames(dataset: Dataset) -> int:
    return int(dataset.get("NumberOfFrames") or 1)


def mask_png(dataset: Dataset, seg_frame: int, colour: tuple[int, int, int]) -> bytes:
    """One SEG frame as an RGBA PNG: transparent outside the segment; binary masks at a fixed opacity,
    fractional ones with opacity proportional to the stored fraction."""
    if not 1 <= seg_frame <= number_of_frames(dataset):
        raise ValueError(f"the SEG has no frame {seg_frame}")
    values = pixel_array(dataset, index=seg_frame - 1)
    if str(dataset.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        maximum = float(dataset.get("MaximumFractionalValue") or 255)
        alpha = np.clip(np.rint(values.astype(np.float64) * (255.0 / maximum)), 0, 255).astype(np.uint8)
    else:
        alpha = np.where(values > 0, BINARY_ALPHA, 0).astype(np.uint8)
    rgba = np.zeros((*values.shape, 4), dtype=np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = alpha
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    return buffer.getvalue()


def hex_colour(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def seg_findings(
    dataset: Dataset, result_id: str, images: PresentImages, mask_url: Callable[[int], str]
) -> list[FindingView]:
    """One finding per segment, with a mask overlay for each of its frames whose image is here."""
    seg = hd.seg.Segmentation.from_dataset(dataset)
    frames = seg_frames(dataset)
    region = (0.0, 0.0, float(dataset.Columns), float(dataset.Rows))
    findings = []
    for description in seg.SegmentSequence:
        number = int(description.segment_number)
        label = str(description.segment_label or description.segmented_property_type.meaning)
        colour = hex_colour(segment_colour(dataset, number))
        finding_id = f"{result_id}-segment-{number}"
        own = [frame for frame in frames if frame.segment == number]
        overlays = [
            Overlay(
                id=f"{finding_id}-frame-{frame.number}",
                kind="mask",
                instance_uid=frame.source_uid,
                frame=frame.source_frame,
                image_url=mask_url(frame.number),
                region=region,
                label=label,
                colour=colour,
            )
            for frame in own
            if frame.source_uid is not None and images.has(frame.source_uid, frame.source_frame)
        ]
        findings.append(_segment_finding(finding_id, label, own, overlays, images))
    return findings


def _segment_finding(
    finding_id: str, label: str, frames: list[SegFrame], overlays: list[Overlay], images: PresentImages
) -> FindingView:
    missing = [
        (frame.source_uid, frame.source_frame)
        for frame in frames
        if frame.source_uid is not None and not images.has(frame.source_uid, frame.source_frame)
    ]
    notes = [images.notes(missing)] if missing else []
    if any(frame.source_uid is None for frame in frames):
        notes.append("some frames do not say which image they lie on and are not drawn")
    if not frames:
        notes.append("the segment is empty")
    first = overlays[0] if overlays else None
    anchor = (first.instance_uid, first.frame) if first else (missing[0] if missing else (None, 1))
    return FindingView(
        id=finding_id,
        label=label,
        instance_uid=anchor[0],
        frame=anchor[1],
        overlays=tuple(overlays),
        note="; ".join(notes),
    )
