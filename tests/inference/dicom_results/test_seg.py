"""The SEG written for a model run reads back, through highdicom, as the heatmaps the model made."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from inference.dicom_results import Algorithm, FindingResult
from inference.dicom_results.coding import PRIVATE_SCHEME
from tests.inference.dicom_results.conftest import (
    EFFUSION_CODE,
    FRAMES,
    algorithm_equipment,
    dciodvfy_errors,
    example_findings,
    gradient,
    make_seg,
    write,
)

Uids = Callable[[str], str]
STEP = 1 / 255  # one step of an 8-bit fractional value


def read_back(seg: Dataset | None, tmp_path: Path) -> hd.seg.Segmentation:
    assert seg is not None
    return hd.seg.segread(write(seg, tmp_path / "seg.dcm"))


def mapped(findings: list[FindingResult]) -> list[FindingResult]:
    return [finding for finding in findings if finding.heatmap is not None]


@pytest.mark.parametrize("name", ["dx", "ct", "multiframe"])
def test_one_fractional_probability_segment_per_heatmap(
    name: str, sources: dict[str, Dataset], algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    source = sources[name]
    findings = example_findings(source)
    seg = read_back(make_seg(source, findings, algorithm, uids, FRAMES[name]), tmp_path)

    assert seg.SegmentationType == "FRACTIONAL"
    assert seg.SegmentationFractionalType == "PROBABILITY"
    assert seg.MaximumFractionalValue == 255
    with_heatmaps = mapped(findings)
    assert seg.segment_numbers == list(range(1, len(with_heatmaps) + 1))
    assert int(seg.NumberOfFrames) == len(with_heatmaps)  # one frame per segment, on the read frame only
    for number, finding in enumerate(with_heatmaps, start=1):
        description = seg.get_segment_description(number)
        assert description.segment_label == finding.display_name
        assert description.tracking_id == finding.label
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        assert description.algorithm_identification is not None
        identification = description.algorithm_identification[0]
        assert identification.AlgorithmName == algorithm.name
        assert identification.AlgorithmVersion == algorithm.version
        assert identification.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # Artificial Intelligence
        category = description.segmented_property_category
        assert (category.value, category.scheme_designator) == ("49755003", "SCT")
    effusion, pneumothorax = (
        seg.get_segment_description(number).segmented_property_type for number in (1, 2)
    )
    assert (effusion.value, effusion.scheme_designator) == (EFFUSION_CODE.value, EFFUSION_CODE.scheme)
    assert (pneumothorax.value, pneumothorax.scheme_designator) == ("Pneumothorax", PRIVATE_SCHEME)
    assert PRIVATE_SCHEME in {item.CodingSchemeDesignator for item in seg.CodingSchemeIdentificationSequence}


@pytest.mark.parametrize("name", ["dx", "ct"])
def test_fractional_values_come_back_within_one_step(
    name: str, sources: dict[str, Dataset], algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    source = sources[name]
    findings = example_findings(source)
    seg = read_back(make_seg(source, findings, algorithm, uids), tmp_path)

    pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], rescale_fractional=True)
    assert pixels.shape == (1, source.Rows, source.Columns, 2)
    for index, finding in enumerate(mapped(findings)):
        assert finding.heatmap is not None
        np.testing.assert_allclose(pixels[0, :, :, index], finding.heatmap, atol=STEP)


def test_the_multiframe_seg_lies_on_the_frame_the_model_read(
    multiframe_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    findings = example_findings(multiframe_source)
    seg = read_back(make_seg(multiframe_source, findings, algorithm, uids, frame=2), tmp_path)

    for item in seg.PerFrameFunctionalGroupsSequence:
        (derived,) = item.DerivationImageSequence[0].SourceImageSequence
        assert derived.ReferencedSOPInstanceUID == multiframe_source.SOPInstanceUID
        assert derived.ReferencedFrameNumber == 2
    pixels = seg.get_pixels_by_source_frame(multiframe_source.SOPInstanceUID, source_frame_numbers=[2])
    for index, finding in enumerate(mapped(findings)):
        assert finding.heatmap is not None
        np.testing.assert_allclose(pixels[0, :, :, index], finding.heatmap, atol=STEP)


@pytest.mark.parametrize("name", ["dx", "ct", "multiframe"])
def test_the_seg_references_and_belongs_to_its_source(
    name: str, sources: dict[str, Dataset], algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    source = sources[name]
    seg = read_back(make_seg(source, example_findings(source), algorithm, uids, FRAMES[name]), tmp_path)
    assert seg.get_source_image_uids() == [
        (source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID)
    ]
    assert (seg.StudyInstanceUID, seg.PatientID) == (source.StudyInstanceUID, source.PatientID)
    assert (seg.SOPInstanceUID, seg.SeriesInstanceUID) == (uids("seg"), uids("seg series"))
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)


def test_contributing_and_own_equipment_name_the_algorithm(
    dx_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    seg = read_back(make_seg(dx_source, example_findings(dx_source), algorithm, uids), tmp_path)
    item = algorithm_equipment(seg, algorithm)
    assert (item.Manufacturer, item.ManufacturerModelName, item.SoftwareVersions) == (
        algorithm.vendor,
        algorithm.name,
        algorithm.version,
    )
    purpose = item.PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("109102", "DCM")
    assert (seg.Manufacturer, seg.ManufacturerModelName, seg.SoftwareVersions, seg.DeviceSerialNumber) == (
        algorithm.vendor,
        algorithm.name,
        algorithm.version,
        algorithm.model_id,
    )


@pytest.mark.parametrize("name", ["dx", "ct", "multiframe"])
def test_dicom3tools_accepts_the_seg(
    name: str, sources: dict[str, Dataset], algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    source = sources[name]
    seg = make_seg(source, example_findings(source), algorithm, uids, FRAMES[name])
    assert seg is not None
    assert dciodvfy_errors(write(seg, tmp_path / "seg.dcm")) == []


def test_no_seg_when_no_finding_has_a_heatmap(dx_source: Dataset, algorithm: Algorithm, uids: Uids) -> None:
    findings = [dataclasses.replace(finding, heatmap=None) for finding in example_findings(dx_source)]
    assert make_seg(dx_source, findings, algorithm, uids) is None


def test_a_long_and_hostile_display_name_still_makes_a_valid_seg(
    dx_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    long_name = "<script>alert('x')</script> \"Ü\" & 胸水 a\\b " * 8  # about 300 characters
    assert len(long_name) >= 300
    finding = dataclasses.replace(example_findings(dx_source)[0], display_name=long_name)
    seg = make_seg(dx_source, [finding], algorithm, uids)
    assert seg is not None
    path = write(seg, tmp_path / "seg.dcm")
    assert dciodvfy_errors(path) == []
    label = hd.seg.segread(path).get_segment_description(1).segment_label
    assert len(label.encode()) <= 64
    assert label.endswith("…")
    assert long_name.replace("\\", "/").startswith(label.removesuffix("…"))


def test_the_same_uids_make_the_same_instance(
    ct_source: Dataset, algorithm: Algorithm, uids: Uids, tmp_path: Path
) -> None:
    first = make_seg(ct_source, example_findings(ct_source), algorithm, uids)
    second = make_seg(ct_source, example_findings(ct_source), algorithm, uids)
    assert first is not None and second is not None
    assert write(first, tmp_path / "a.dcm").read_bytes() == write(second, tmp_path / "b.dcm").read_bytes()


def test_a_heatmap_off_the_source_grid_is_refused(
    dx_source: Dataset, algorithm: Algorithm, uids: Uids
) -> None:
    transposed = dataclasses.replace(example_findings(dx_source)[0], heatmap=gradient(dx_source).T.copy())
    with pytest.raises(ValueError, match="heatmap"):
        make_seg(dx_source, [transposed], algorithm, uids)


def test_a_multiframe_source_without_plane_positions_gets_no_seg(
    dicom_dir: Path, algorithm: Algorithm, uids: Uids
) -> None:
    # emri_small: a real 10-frame Enhanced MR without functional groups; highdicom cannot place one frame
    source = pydicom.dcmread(dicom_dir / "transfer_syntax" / "emri_small.dcm")
    assert make_seg(source, example_findings(source), algorithm, uids, frame=3) is None
