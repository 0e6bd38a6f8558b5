"""Other vendors' SEG and TID 1500 SR read into the shared result view, checked against the real highdicom
fixtures: every expected label, image and coordinate below is read from the files with plain pydicom, not
from the reader under test."""

from __future__ import annotations

import copy
import io
from collections import Counter
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from viewer.ai_results.foreign_results import algorithm_info, foreign_result
from viewer.ai_results.foreign_seg import BINARY_ALPHA, frame_colour, mask_png
from viewer.ai_results.view import MissingImage

SEG_FILES = (
    "seg_image_cr_binary.dcm",
    "seg_image_ct_binary.dcm",
    "seg_image_ct_binary_overlap.dcm",
    "seg_image_ct_true_fractional.dcm",
)
SR_FILES = ("sr_document.dcm", "sr_document_with_multiple_groups.dcm")
REFERENCED = ("foreign_ai/referenced_cr_16x16", "foreign_ai/referenced_ct_16x16")
CT_SMALL = "transfer_syntax/pydicom_CT_small.dcm"
MISSING = "is not in the archive"
MISSING_SEVERAL = "referenced images are not in the archive"
IMAGING_MEASUREMENTS = ("DCM", "126010")
MEASUREMENT_GROUP = ("DCM", "125007")
FINDING = ("DCM", "121071")
TRACKING_IDENTIFIER = ("DCM", "112039")
FINDING_SITE = ("SCT", "363698007")
OVERLAY_KIND = {"ELLIPSE": "ellipse", "CIRCLE": "ellipse", "POLYLINE": "polyline", "POINT": "point"}


def mask_url(frame: int) -> str:
    return f"/masks/{frame}.png"


@pytest.fixture(scope="module")
def foreign_dir(shared_data: Path) -> Path:
    return shared_data / "dicom" / "foreign_ai" / "highdicom"


@pytest.fixture(scope="module")
def images(shared_data: Path) -> dict[str, int]:
    """Every image the fixtures reference, as the archive would list them (SOP UID -> frames)."""
    paths = [path for folder in REFERENCED for path in (shared_data / "dicom" / folder).glob("*.dcm")]
    found = {}
    for path in [*paths, shared_data / "dicom" / CT_SMALL]:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        found[str(dataset.SOPInstanceUID)] = int(dataset.get("NumberOfFrames") or 1)
    return found


def read(folder: Path, name: str) -> Dataset:
    return pydicom.dcmread(folder / name)


# --- expectations read with pydicom -----------------------------------------------------------------


def seg_frame_sources(seg: Dataset) -> list[tuple[int, str]]:
    """(segment number, source SOP Instance UID) of every SEG frame, in frame order."""
    return [
        (
            int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
            str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID),
        )
        for group in seg.PerFrameFunctionalGroupsSequence
    ]


def concept(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return str(code.CodingSchemeDesignator), str(code.CodeValue)


def measurement_groups(sr: Dataset) -> list[Dataset]:
    imaging = next(item for item in sr.ContentSequence if concept(item) == IMAGING_MEASUREMENTS)
    return [item for item in imaging.ContentSequence if concept(item) == MEASUREMENT_GROUP]


def group_label(group: Dataset) -> str:
    for item in group.ContentSequence:
        if concept(item) == FINDING:
            return str(item.ConceptCodeSequence[0].CodeMeaning)
    return next(str(item.TextValue) for item in group.ContentSequence if concept(item) == TRACKING_IDENTIFIER)


def group_regions(group: Dataset) -> list[Dataset]:
    return [item for item in group.ContentSequence if item.ValueType in ("SCOORD", "SCOORD3D")]


def referenced_uids(item: Dataset) -> set[str]:
    """Every SOP Instance UID referenced anywhere under a content item."""
    found = {str(ref.ReferencedSOPInstanceUID) for ref in item.get("ReferencedSOPSequence") or []}
    for child in item.get("ContentSequence") or []:
        found |= referenced_uids(child)
    return found


def expected_points(region: Dataset) -> tuple[tuple[float, float], ...]:
    """The shape's points; a circle (centre, a point on it) as the ends of its two axes."""
    data = [float(value) for value in region.GraphicData]
    pairs = tuple(zip(data[::2], data[1::2], strict=True))
    if region.GraphicType != "CIRCLE":
        return pairs
    (cx, cy), (px, py) = pairs
    radius = ((px - cx) ** 2 + (py - cy) ** 2) ** 0.5
    return ((cx - radius, cy), (cx + radius, cy), (cx, cy - radius), (cx, cy + radius))


def expected_details(group: Dataset) -> list[str]:
    """Measurements (NUM) and evaluations (contained CODE other than the finding), as text starts."""
    lines = []
    for item in group.ContentSequence:
        name = str(item.ConceptNameCodeSequence[0].CodeMeaning)
        if item.ValueType == "NUM":
            lines.append(f"{name}: {float(item.MeasuredValueSequence[0].NumericValue):g}")
        elif item.ValueType == "CODE" and item.RelationshipType == "CONTAINS" and concept(item) != FINDING:
            lines.append(f"{name}: {item.ConceptCodeSequence[0].CodeMeaning}")
    return lines


# --- SEG ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SEG_FILES)
def test_seg_segments_become_findings_with_one_mask_per_frame(
    foreign_dir: Path, images: dict[str, int], name: str
) -> None:
    seg = read(foreign_dir, name)
    sources = seg_frame_sources(seg)
    view = foreign_result(seg, images, mask_url)

    assert view.id == f"foreign-{seg.SOPInstanceUID}"
    assert (view.source, view.kind, view.object_uid) == ("foreign", "SEG", seg.SOPInstanceUID)
    assert view.problems == ()
    assert view.algorithm.regulatory_status is None
    assert [finding.label for finding in view.findings] == [s.SegmentLabel for s in seg.SegmentSequence]
    for finding, segment in zip(view.findings, seg.SegmentSequence, strict=True):
        frames = [n for n, (number, _) in enumerate(sources, 1) if number == segment.SegmentNumber]
        assert [overlay.image_url for overlay in finding.overlays] == [mask_url(n) for n in frames]
        assert [overlay.instance_uid for overlay in finding.overlays] == [sources[n - 1][1] for n in frames]
        assert {overlay.kind for overlay in finding.overlays} == {"mask"}
        assert {overlay.region for overlay in finding.overlays} == {(0.0, 0.0, seg.Columns, seg.Rows)}
        assert finding.note == ""


@pytest.mark.parametrize("name", SEG_FILES)
def test_seg_without_its_images_keeps_findings_with_a_note_and_lists_each_missing_image(
    foreign_dir: Path, name: str
) -> None:
    seg = read(foreign_dir, name)
    sources = seg_frame_sources(seg)
    view = foreign_result(seg, {}, mask_url)

    assert [finding.label for finding in view.findings] == [s.SegmentLabel for s in seg.SegmentSequence]
    for finding, segment in zip(view.findings, seg.SegmentSequence, strict=True):
        assert finding.overlays == ()
        own = {uid for number, uid in sources if number == segment.SegmentNumber}
        # a segment over several missing images says how many, not every UID (the result lists them)
        expected = (
            f"the referenced image ({own.pop()}) {MISSING}"
            if len(own) == 1
            else f"{len(own)} {MISSING_SEVERAL}"
        )
        assert finding.note == expected
        assert finding.instance_uid in {uid for _, uid in sources}
    missing = dict.fromkeys(uid for _, uid in sources)
    assert view.missing_images == tuple(MissingImage(uid) for uid in missing)
    assert view.problems == ()


def test_seg_algorithm_is_read_from_its_equipment(foreign_dir: Path, images: dict[str, int]) -> None:
    seg = read(foreign_dir, SEG_FILES[1])
    info = foreign_result(seg, images, mask_url).algorithm
    assert (info.name, info.version, info.vendor) == (
        seg.ManufacturerModelName,
        seg.SoftwareVersions,
        seg.Manufacturer,
    )
    assert info.device_uid is None


def test_contributing_equipment_names_the_algorithm_before_general_equipment(foreign_dir: Path) -> None:
    seg = read(foreign_dir, SEG_FILES[0])
    scanner, algorithm = Dataset(), Dataset()
    scanner.Manufacturer = "Scanner Corp"
    algorithm.Manufacturer = "Vendor AI"
    algorithm.ManufacturerModelName = "LungCAD"
    algorithm.SoftwareVersions = ["2.1", "build 7"]
    algorithm.DeviceUID = generate_uid()
    seg.ContributingEquipmentSequence = [scanner, algorithm]
    info = algorithm_info(seg)
    assert (info.name, info.version, info.vendor) == ("LungCAD", "2.1/build 7", "Vendor AI")
    assert info.device_uid == algorithm.DeviceUID


def test_unnamed_algorithm_reads_unknown(foreign_dir: Path) -> None:
    seg = read(foreign_dir, SEG_FILES[0])
    for keyword in ("Manufacturer", "ManufacturerModelName", "SoftwareVersions"):
        delattr(seg, keyword)
    for segment in seg.SegmentSequence:
        for keyword in ("SegmentAlgorithmName", "SegmentationAlgorithmIdentificationSequence"):
            if keyword in segment:
                delattr(segment, keyword)
    info = algorithm_info(seg)
    assert (info.name, info.version, info.vendor) == ("unknown", "unknown", "unknown")


@pytest.mark.parametrize("name", SEG_FILES)
def test_mask_png_pixels_are_the_seg_frames(foreign_dir: Path, name: str) -> None:
    seg = read(foreign_dir, name)
    frames = seg.pixel_array.reshape(int(seg.get("NumberOfFrames") or 1), seg.Rows, seg.Columns)
    fractional = seg.SegmentationType == "FRACTIONAL"
    for number, stored in enumerate(frames, start=1):
        colour = frame_colour(seg, number)
        rgba = np.asarray(Image.open(io.BytesIO(mask_png(seg, number, colour))))
        assert rgba.shape == (seg.Rows, seg.Columns, 4)
        if fractional:
            expected = np.rint(stored * (255.0 / float(seg.MaximumFractionalValue)))
        else:
            expected = np.where(stored > 0, BINARY_ALPHA, 0)
        np.testing.assert_array_equal(rgba[..., 3], expected)
        assert (rgba[..., 3] > 0).any(), "a fixture frame is empty: the comparison proves nothing"
        np.testing.assert_array_equal(
            rgba[stored > 0][:, :3], np.broadcast_to(colour, (int((stored > 0).sum()), 3))
        )


def test_mask_png_refuses_a_frame_the_seg_does_not_have(foreign_dir: Path) -> None:
    seg = read(foreign_dir, SEG_FILES[1])
    with pytest.raises(ValueError, match="no frame"):
        mask_png(seg, int(seg.NumberOfFrames) + 1, (255, 0, 0))


def test_segments_take_their_recommended_colour(foreign_dir: Path, images: dict[str, int]) -> None:
    seg = read(foreign_dir, SEG_FILES[1])
    seg.SegmentSequence[0].RecommendedDisplayCIELabValue = list(hd.color.CIELabColor(50.0, 0.0, 0.0).value)
    view = foreign_result(seg, images, mask_url)
    grey = hd.color.CIELabColor(50.0, 0.0, 0.0).to_rgb()
    assert {overlay.colour for overlay in view.findings[0].overlays} == {"#{:02x}{:02x}{:02x}".format(*grey)}


# --- TID 1500 SR --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SR_FILES)
def test_sr_measurement_groups_become_findings_with_their_shapes_and_details(
    foreign_dir: Path, images: dict[str, int], name: str
) -> None:
    sr = read(foreign_dir, name)
    groups = measurement_groups(sr)
    view = foreign_result(sr, images, mask_url)

    assert (view.kind, view.source, view.problems) == ("TID 1500 SR", "foreign", ())
    assert view.algorithm.vendor == sr.Manufacturer
    assert Counter(finding.label for finding in view.findings) == Counter(map(group_label, groups))
    by_label = {finding.label: finding for finding in view.findings}
    for group in groups:
        finding = by_label[group_label(group)]
        regions = group_regions(group)
        flat = [region for region in regions if region.ValueType == "SCOORD"]
        assert [overlay.kind for overlay in finding.overlays] == [OVERLAY_KIND[r.GraphicType] for r in flat]
        for overlay, region in zip(finding.overlays, flat, strict=True):
            pairs = expected_points(region)
            assert overlay.point == pairs[0] if overlay.kind == "point" else overlay.points == pairs
            assert overlay.instance_uid in referenced_uids(region)
        if any(region.ValueType == "SCOORD3D" for region in regions):
            assert "3D coordinates are not drawn" in finding.note
        else:
            assert finding.note == ""
        for line in expected_details(group):
            assert any(detail.startswith(line) for detail in finding.details), (line, finding.details)
        sites = [i for i in group.ContentSequence if concept(i) == FINDING_SITE]
        for site in sites:
            assert f"Finding site: {site.ConceptCodeSequence[0].CodeMeaning}" in finding.details


@pytest.mark.parametrize("name", SR_FILES)
def test_sr_without_its_images_keeps_findings_with_a_note_and_lists_each_missing_image(
    foreign_dir: Path, name: str
) -> None:
    sr = read(foreign_dir, name)
    groups = measurement_groups(sr)
    view = foreign_result(sr, {}, mask_url)

    assert len(view.findings) == len(groups)
    for finding in view.findings:
        assert finding.overlays == ()
        assert f"the referenced image ({finding.instance_uid}) {MISSING}" in finding.note
    missing = set().union(*map(referenced_uids, groups))
    assert sorted(image.instance_uid for image in view.missing_images) == sorted(missing)
    assert {image.frame for image in view.missing_images} == {None}
    assert view.problems == ()


def _planar_group(
    source: Dataset, label: str, region: hd.sr.ImageRegion | hd.sr.ImageRegion3D, measurements: list
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    finding = hd.sr.CodedConcept("99" + label[:6], "99VENDOR", label)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{label} 1"),
        referenced_region=region,
        finding_type=finding,
        measurements=measurements,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(finding, codes.SCT.Present)],
    )


def vendor_sr(source: Dataset) -> Dataset:
    """A TID 1500 SR as another AI vendor might write it: a boxed finding with a probability and an
    operating threshold, a 3D finding, and the study's priority in a group of its own."""
    box = np.array([[10.0, 20.0], [40.0, 20.0], [40.0, 50.0], [10.0, 50.0], [10.0, 20.0]])
    unit = codes.UCUM.NoUnits
    boxed = _planar_group(
        source,
        "Nodule",
        hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=box,
            source_image=hd.sr.SourceImageForRegion.from_source_image(source),
        ),
        [
            hd.sr.Measurement(name=codes.DCM.Probability, value=0.83, unit=unit),
            hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=0.5, unit=unit),
        ],
    )
    solid = _planar_group(
        source,
        "Mass",
        hd.sr.ImageRegion3D(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT,
            graphic_data=np.array([[1.0, 2.0, 3.0]]),
            frame_of_reference_uid=source.FrameOfReferenceUID,
        ),
        [],
    )
    priority = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="triage"),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                hd.sr.CodedConcept("260870009", "SCT", "Priority"),
                hd.sr.CodedConcept("urgent", "99VENDOR", "Urgent"),
            )
        ],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[boxed, solid, priority],
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=7,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Vendor AI",
    )


def test_vendor_sr_box_probability_threshold_decision_triage_and_3d(shared_data: Path) -> None:
    source = pydicom.dcmread(shared_data / "dicom" / CT_SMALL)
    view = foreign_result(vendor_sr(source), {str(source.SOPInstanceUID): 1}, mask_url)

    assert view.triage == "Urgent"
    assert view.problems == ()
    nodule, mass = sorted(view.findings, key=lambda finding: finding.label != "Nodule")
    assert (nodule.label, nodule.probability, nodule.threshold, nodule.positive) == (
        "Nodule",
        0.83,
        0.5,
        True,
    )
    assert [(o.kind, o.rect, o.instance_uid) for o in nodule.overlays] == [
        ("box", (10.0, 20.0, 40.0, 50.0), source.SOPInstanceUID)
    ]
    assert (mass.label, mass.overlays, mass.note) == ("Mass", (), "3D coordinates are not drawn")
    assert len(view.findings) == 2  # the priority-only group is the triage, not a finding


def basic_text_sr(source: Dataset) -> Dataset:
    """A plain text report (Basic Text SR): not a TID 1500 measurement report."""
    content = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report"), template_id="2000"
    )
    content.ContentSequence = pydicom.Sequence(
        [
            hd.sr.TextContentItem(
                name=codes.DCM.Finding, value="<b>no acute findings</b>", relationship_type="CONTAINS"
            )
        ]
    )
    sr = hd.sr.EnhancedSR(
        evidence=[source],
        content=content,
        series_instance_uid=generate_uid(),
        series_number=8,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Reporting Corp",
    )
    sr.SOPClassUID = pydicom.uid.BasicTextSRStorage
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    return sr


def test_an_sr_that_is_not_tid_1500_is_listed_with_a_problem_not_raised(shared_data: Path) -> None:
    source = pydicom.dcmread(shared_data / "dicom" / CT_SMALL)
    basic = basic_text_sr(source)
    view = foreign_result(basic, {str(source.SOPInstanceUID): 1}, mask_url)
    assert (view.findings, view.kind, view.object_uid) == ((), "SR", basic.SOPInstanceUID)
    assert view.problems == (
        "not shown: an SR of class Basic Text SR Storage cannot hold a TID 1500 measurement report",
    )

    enhanced = copy.deepcopy(basic)
    enhanced.SOPClassUID = pydicom.uid.EnhancedSRStorage
    view = foreign_result(enhanced, {}, mask_url)
    assert (view.findings, view.problems) == ((), ("not shown: the SR is not a TID 1500 measurement report",))


@pytest.mark.parametrize("name", (SEG_FILES[1], SR_FILES[0]))
def test_a_broken_object_is_listed_with_a_problem_not_raised(foreign_dir: Path, name: str) -> None:
    broken = read(foreign_dir, name)
    for keyword in ("PerFrameFunctionalGroupsSequence", "SegmentSequence", "ContentSequence"):
        if keyword in broken:
            delattr(broken, keyword)
    view = foreign_result(broken, {}, mask_url)
    assert view.findings == ()
    assert len(view.problems) == 1 and view.problems[0].startswith("not shown: the ")


# --- the algorithm's name when the equipment holds a repository address ------------------------------


def test_a_git_address_as_model_name_reads_as_the_repository_with_its_version_and_a_link(
    foreign_dir: Path,
) -> None:
    seg = read(foreign_dir, SEG_FILES[1])
    algorithm = Dataset()
    algorithm.Manufacturer = "QIICR"
    algorithm.ManufacturerModelName = "https://github.com/QIICR/dcmqi.git"
    algorithm.SoftwareVersions = ["https://github.com/QIICR/dcmqi.git", "1.2.5"]
    algorithm.DeviceUID = generate_uid()
    seg.ContributingEquipmentSequence = [algorithm]
    info = algorithm_info(seg)
    assert (info.name, info.version, info.vendor) == ("dcmqi", "1.2.5", "QIICR")
    assert info.home_url == "https://github.com/QIICR/dcmqi.git"


def test_a_pinned_address_gives_the_version_and_a_hostile_one_no_link(foreign_dir: Path) -> None:
    seg = read(foreign_dir, SEG_FILES[0])
    seg.ManufacturerModelName = "git@github.com:QIICR/dcmqi.git"
    seg.SoftwareVersions = "https://github.com/QIICR/dcmqi.git@v1.2.5"
    info = algorithm_info(seg)
    assert (info.name, info.version) == ("dcmqi", "v1.2.5")
    assert info.home_url == "https://github.com/QIICR/dcmqi.git"

    seg.ManufacturerModelName = "javascript://alert(document.cookie)"
    seg.SoftwareVersions = "v1"
    info = algorithm_info(seg)
    # no repository path to name: the text stays as it is (escaped by the page), and is never a link
    assert (info.name, info.version, info.home_url) == ("javascript://alert(document.cookie)", "v1", None)


def test_plain_equipment_names_have_no_link(foreign_dir: Path, images: dict[str, int]) -> None:
    seg = read(foreign_dir, SEG_FILES[1])
    assert foreign_result(seg, images, mask_url).algorithm.home_url is None
