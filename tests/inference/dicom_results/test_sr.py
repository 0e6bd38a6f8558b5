"""The SR written for a model run reads back, through highdicom, as exactly what the model said."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.sr.codedict import codes

from inference.dicom_results import Algorithm, FindingResult, build_sr
from inference.dicom_results.coding import PRIVATE_SCHEME
from tests.inference.dicom_results.conftest import (
    CONTENT_TIME,
    EFFUSION_CODE,
    FRAMES,
    algorithm_equipment,
    dciodvfy_errors,
    dsrdump,
    example_findings,
    make_seg,
    write,
)

Uids = Callable[[str], str]


def make_sr(
    source: Dataset,
    findings: list[FindingResult],
    algorithm: Algorithm,
    uids: Uids,
    *,
    triage: str | None = "urgent",
    frame: int | None = None,
    seg: Dataset | None = None,
) -> Dataset:
    return build_sr(
        source,
        findings,
        triage,
        algorithm,
        sop_instance_uid=uids("sr"),
        series_instance_uid=uids("sr series"),
        frame=frame,
        seg=seg,
        content_datetime=CONTENT_TIME,
    )


def read_back(sr: Dataset, tmp_path: Path) -> hd.sr.Comprehensive3DSR:
    result = hd.sr.srread(write(sr, tmp_path / "sr.dcm"))
    assert isinstance(result, hd.sr.Comprehensive3DSR)
    return result


def concept(finding: FindingResult) -> hd.sr.CodedConcept:
    if finding.code is None:
        return hd.sr.CodedConcept(finding.label, PRIVATE_SCHEME, finding.display_name)
    return hd.sr.CodedConcept(finding.code.value, finding.code.scheme, finding.code.meaning)


def report_of(sr: Dataset) -> hd.sr.MeasurementReport:
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    return report


def finding_group(sr: Dataset, finding: FindingResult) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    groups = [
        group
        for group in report_of(sr).get_image_measurement_groups(finding_type=concept(finding))
        if group.tracking_identifier == finding.label
    ]
    assert len(groups) == 1, f"{finding.label}: {len(groups)} image-level groups"
    return groups[0]


@pytest.mark.parametrize("name", ["dx", "ct", "multiframe"])
def test_each_finding_reads_back_with_probability_threshold_and_decision(
    name: str, sources: dict[str, Dataset], algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    source = sources[name]
    findings = example_findings(source)
    sr = read_back(make_sr(source, findings, algorithm, uids, frame=FRAMES[name]), tmp_path)

    for finding in findings:
        group = finding_group(sr, finding)
        assert group.finding_type is not None
        assert group.finding_type.meaning == concept(finding).meaning  # codes compare without it
        (probability,) = group.get_measurements(name=codes.DCM.Probability)
        assert probability.value == pytest.approx(finding.probability)
        assert probability.unit == codes.UCUM.NoUnits
        (threshold,) = group.get_measurements(name=codes.DCM.ThresholdValue)
        assert threshold.value == pytest.approx(finding.threshold)
        (decision,) = group.get_qualitative_evaluations(name=concept(finding))
        assert decision.value == (codes.SCT.Present if finding.positive else codes.SCT.Absent)
        (image,) = group.source_images
        assert image.referenced_sop_instance_uid == source.SOPInstanceUID
        assert image.referenced_sop_class_uid == source.SOPClassUID
        expected_frames = None if FRAMES[name] is None else [FRAMES[name]]
        assert image.referenced_frame_numbers == expected_frames


@pytest.mark.parametrize("name", ["dx", "ct", "multiframe"])
def test_each_box_is_a_closed_five_point_polyline_on_the_source_image(
    name: str, sources: dict[str, Dataset], algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    source = sources[name]
    findings = example_findings(source)
    sr = read_back(make_sr(source, findings, algorithm, uids, frame=FRAMES[name]), tmp_path)

    for finding in findings:
        groups = report_of(sr).get_planar_roi_measurement_groups(
            finding_type=concept(finding), graphic_type=hd.sr.GraphicTypeValues.POLYLINE
        )
        assert [group.tracking_identifier for group in groups] == [
            f"{finding.label} box {number}" for number in range(1, len(finding.boxes) + 1)
        ]
        for group, (x0, y0, x1, y1) in zip(groups, finding.boxes, strict=True):
            region = group.roi
            assert region is not None
            assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
            points = region.value
            assert points.shape == (5, 2)
            np.testing.assert_allclose(points, [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], rtol=1e-6)
            (selected_from,) = region.ContentSequence  # SCOORD "selected from" its IMAGE
            assert selected_from.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
            frame = selected_from.ReferencedSOPSequence[0].get("ReferencedFrameNumber")
            assert (None if frame is None else int(frame)) == FRAMES[name]


def test_a_box_reaching_outside_the_image_is_clipped_to_it(
    dx_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    columns, rows = float(dx_source.Columns), float(dx_source.Rows)
    finding = dataclasses.replace(example_findings(dx_source)[0], boxes=[(-5.0, 3.0, columns + 9, rows + 1)])
    sr = read_back(make_sr(dx_source, [finding], algorithm, uids), tmp_path)
    (group,) = report_of(sr).get_planar_roi_measurement_groups(finding_type=EFFUSION_CODE_CONCEPT)
    assert group.roi is not None
    expected = [[0.0, 3.0], [columns, 3.0], [columns, rows], [0.0, rows], [0.0, 3.0]]
    np.testing.assert_allclose(group.roi.value, np.array(expected))


EFFUSION_CODE_CONCEPT = hd.sr.CodedConcept(EFFUSION_CODE.value, EFFUSION_CODE.scheme, EFFUSION_CODE.meaning)


@pytest.mark.parametrize("priority", ["urgent", "priority", "routine"])
def test_the_triage_priority_reads_back(
    priority: str, dx_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    sr = read_back(
        make_sr(dx_source, example_findings(dx_source), algorithm, uids, triage=priority), tmp_path
    )
    (group,) = [
        group
        for group in report_of(sr).get_image_measurement_groups()
        if group.tracking_identifier == "triage"
    ]
    (evaluation,) = group.get_qualitative_evaluations()
    assert evaluation.name == hd.sr.CodedConcept("260870009", "SCT", "Priority")
    assert isinstance(evaluation.value, hd.sr.CodedConcept)
    assert evaluation.value == hd.sr.CodedConcept(priority, PRIVATE_SCHEME, priority.capitalize())
    assert evaluation.value.meaning == priority.capitalize()  # codes compare by value and scheme only


def test_no_triage_group_when_no_rule_fired(
    dx_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    sr = read_back(make_sr(dx_source, example_findings(dx_source), algorithm, uids, triage=None), tmp_path)
    identifiers = [group.tracking_identifier for group in report_of(sr).get_image_measurement_groups()]
    assert identifiers == ["Effusion", "Pneumothorax", "Cardiomegaly"]


def test_the_algorithm_is_the_device_observer(
    dx_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    sr = read_back(make_sr(dx_source, example_findings(dx_source), algorithm, uids), tmp_path)
    (observer,) = report_of(sr).get_observer_contexts(observer_type=codes.DCM.Device)
    device = observer.observer_identifying_attributes
    assert isinstance(device, hd.sr.DeviceObserverIdentifyingAttributes)
    assert device.uid == algorithm.device_uid
    assert device.name == algorithm.name
    assert device.manufacturer_name == algorithm.vendor
    assert device.model_name == algorithm.name
    assert device.serial_number == algorithm.model_id
    assert report_of(sr).get_observer_contexts(observer_type=codes.DCM.Person) == []


def test_contributing_and_own_equipment_name_the_algorithm(
    dx_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    sr = read_back(make_sr(dx_source, example_findings(dx_source), algorithm, uids), tmp_path)
    item = algorithm_equipment(sr, algorithm)
    assert item.Manufacturer == algorithm.vendor
    assert item.ManufacturerModelName == algorithm.name
    assert item.SoftwareVersions == algorithm.version
    assert item.DeviceUID == algorithm.device_uid
    purpose = item.PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("109102", "DCM")  # Processing Equipment
    assert (sr.Manufacturer, sr.ManufacturerModelName, sr.SoftwareVersions) == (
        algorithm.vendor,
        algorithm.name,
        algorithm.version,
    )


@pytest.mark.parametrize("name", ["dx", "ct", "multiframe"])
def test_the_sr_belongs_to_the_source_study_and_patient(
    name: str, sources: dict[str, Dataset], algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    source = sources[name]
    sr = read_back(make_sr(source, example_findings(source), algorithm, uids, frame=FRAMES[name]), tmp_path)
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == source.PatientID
    assert sr.SOPInstanceUID == uids("sr")
    assert sr.SeriesInstanceUID == uids("sr series")
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


@pytest.mark.parametrize("name", ["dx", "ct", "multiframe"])
def test_each_heatmap_is_referenced_as_its_seg_segment(
    name: str, sources: dict[str, Dataset], algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    source = sources[name]
    findings = example_findings(source)
    seg = make_seg(source, findings, algorithm, uids, FRAMES[name])
    assert seg is not None
    sr = read_back(make_sr(source, findings, algorithm, uids, frame=FRAMES[name], seg=seg), tmp_path)
    frame_segments = {
        number: int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1)
    }
    for finding in findings:
        groups = [
            group
            for group in report_of(sr).get_planar_roi_measurement_groups(finding_type=concept(finding))
            if group.referenced_segmentation_frame is not None
        ]
        if finding.heatmap is None:
            assert groups == []
            continue
        (group,) = groups
        reference = group.referenced_segmentation_frame
        assert reference is not None
        assert reference.referenced_sop_instance_uid == seg.SOPInstanceUID
        (seg_frame,) = reference[0].referenced_frame_numbers
        segment = seg.SegmentSequence[frame_segments[seg_frame] - 1]
        assert segment.SegmentLabel == finding.display_name
        assert reference.source_image_for_segmentation.referenced_sop_instance_uid == source.SOPInstanceUID
    evidence_uids = {
        instance.ReferencedSOPInstanceUID
        for series in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }
    assert evidence_uids == {source.SOPInstanceUID, seg.SOPInstanceUID}


def test_a_finding_without_a_code_gets_a_declared_private_code(
    dx_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    findings = example_findings(dx_source)
    sr = read_back(make_sr(dx_source, findings, algorithm, uids), tmp_path)
    types = {
        group.tracking_identifier: group.finding_type
        for group in report_of(sr).get_image_measurement_groups()
    }
    assert types["Pneumothorax"] == hd.sr.CodedConcept("Pneumothorax", PRIVATE_SCHEME, "Pneumothorax")
    assert types["Effusion"] == EFFUSION_CODE_CONCEPT
    declared = {item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence}
    assert PRIVATE_SCHEME in declared
    assert all(designator.startswith("99") for designator in declared)


@pytest.mark.parametrize("name", ["dx", "ct", "multiframe"])
def test_dcmtk_and_dicom3tools_accept_the_sr(
    name: str, sources: dict[str, Dataset], algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    source = sources[name]
    findings = example_findings(source)
    seg = make_seg(source, findings, algorithm, uids, FRAMES[name])
    path = write(make_sr(source, findings, algorithm, uids, frame=FRAMES[name], seg=seg), tmp_path / "sr.dcm")
    dumped = dsrdump(path)
    assert dumped.returncode == 0, dumped.stderr
    assert "Pleural effusion" in dumped.stdout  # it really read the content tree
    assert [line for line in (dumped.stdout + dumped.stderr).splitlines() if "error" in line.lower()] == []
    assert dciodvfy_errors(path) == []


def test_a_300_character_display_name_still_makes_a_valid_sr(
    dx_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    long_name = "Very long finding name " * 13 + "end"  # 302 characters
    assert len(long_name) >= 300
    finding = dataclasses.replace(example_findings(dx_source)[1], display_name=long_name)
    path = write(make_sr(dx_source, [finding], algorithm, uids), tmp_path / "sr.dcm")
    assert dciodvfy_errors(path) == []
    assert dsrdump(path).returncode == 0
    (group,) = report_of(hd.sr.srread(path)).get_image_measurement_groups(
        finding_type=hd.sr.CodedConcept("Pneumothorax", PRIVATE_SCHEME, "ignored: codes compare by value")
    )
    assert group.finding_type is not None
    meaning = group.finding_type.meaning
    assert len(meaning.encode()) <= 64
    assert meaning.startswith("Very long finding name")
    assert meaning.endswith("…")


def test_html_and_odd_characters_round_trip_as_text(
    dx_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    hostile = "<img src=x onerror=alert(1)> Ünïcödé & 'q' \"dq\" 胸水 a\\b"
    finding = dataclasses.replace(example_findings(dx_source)[1], display_name=hostile)
    vendor_algorithm = dataclasses.replace(algorithm, name="<b>Model</b> & co", vendor='Vendor "Ü" <x>')
    path = write(make_sr(dx_source, [finding], vendor_algorithm, uids), tmp_path / "sr.dcm")
    assert dciodvfy_errors(path) == []
    sr = hd.sr.srread(path)
    (group,) = report_of(sr).get_image_measurement_groups(
        finding_type=hd.sr.CodedConcept("Pneumothorax", PRIVATE_SCHEME, "x")
    )
    # nothing escaped; only the backslash, the DICOM value delimiter, becomes a slash
    assert group.finding_type is not None
    assert group.finding_type.meaning == hostile.replace("\\", "/")
    (observer,) = report_of(sr).get_observer_contexts(observer_type=codes.DCM.Device)
    assert observer.observer_identifying_attributes.name == "<b>Model</b> & co"
    assert sr.Manufacturer == 'Vendor "Ü" <x>'
    assert algorithm_equipment(sr, vendor_algorithm).ManufacturerModelName == "<b>Model</b> & co"


def test_the_same_uids_make_the_same_instance(
    ct_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    first = write(make_sr(ct_source, example_findings(ct_source), algorithm, uids), tmp_path / "first.dcm")
    second = write(make_sr(ct_source, example_findings(ct_source), algorithm, uids), tmp_path / "second.dcm")
    assert first.read_bytes() == second.read_bytes()


def test_metadata_without_pixels_makes_the_same_sr(
    dicom_dir: Path, dx_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    metadata = pydicom.dcmread(dicom_dir / "dx_chest" / "dx_image.dcm", stop_before_pixels=True)
    findings = example_findings(dx_source)
    with_pixels = write(make_sr(dx_source, findings, algorithm, uids), tmp_path / "pixels.dcm")
    without = write(make_sr(metadata, findings, algorithm, uids), tmp_path / "metadata.dcm")
    assert with_pixels.read_bytes() == without.read_bytes()


def test_a_multiframe_source_needs_the_frame_the_model_read(
    multiframe_source: Dataset, algorithm: Algorithm, uids: Uids
) -> None:
    findings = example_findings(multiframe_source)
    with pytest.raises(ValueError, match="frame"):
        make_sr(multiframe_source, findings, algorithm, uids, frame=None)
    with pytest.raises(ValueError, match="frame 4"):
        make_sr(multiframe_source, findings, algorithm, uids, frame=4)


def test_a_multiframe_source_without_geometry_still_gets_its_sr(
    dicom_dir: Path, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    # emri_small: a real 10-frame Enhanced MR without functional groups
    source = pydicom.dcmread(dicom_dir / "transfer_syntax" / "emri_small.dcm")
    findings = example_findings(source)
    path = write(make_sr(source, findings, algorithm, uids, frame=7), tmp_path / "sr.dcm")
    assert dciodvfy_errors(path) == []
    group = finding_group(hd.sr.srread(path), findings[0])
    assert group.source_images[0].referenced_frame_numbers == [7]
