"""CR and DX images as real files come: with Pixel Spacing, Imager Pixel Spacing, both or neither.

Each combination must still get its SEG and SR, and both must read back with highdicom. Before, highdicom's
TID 1600 Image Library read Imager Pixel Spacing unconditionally and the SR of a CR without it was never made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import Dataset

from inference.dicom_results import Algorithm, build_sr
from tests.inference.dicom_results.conftest import CONTENT_TIME, example_findings, make_seg, write

SPACINGS = {
    "both": ("PixelSpacing", "ImagerPixelSpacing"),
    "pixel spacing only": ("PixelSpacing",),
    "imager pixel spacing only": ("ImagerPixelSpacing",),
    "neither": (),
}


def projection_source(dx_source: Dataset, modality: str, keep: tuple[str, ...]) -> Dataset:
    """The real DX chest image (it carries both spacings) as a CR or DX with only ``keep`` left."""
    dx_source.Modality = modality
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        assert keyword in dx_source, "the fixture must start with both spacings"
        if keyword not in keep:
            delattr(dx_source, keyword)
    return dx_source


@pytest.mark.parametrize("modality", ["CR", "DX"])
@pytest.mark.parametrize("spacing", list(SPACINGS))
def test_every_spacing_combination_gets_an_sr_and_a_seg_that_read_back(
    dx_source: Dataset,
    algorithm: Algorithm,
    uids: Callable[[str], str],
    tmp_path: Path,
    modality: str,
    spacing: str,
) -> None:
    source = projection_source(dx_source, modality, SPACINGS[spacing])
    findings = example_findings(source)
    seg = make_seg(source, findings, algorithm, uids)
    assert seg is not None
    sr = build_sr(
        source,
        findings,
        "urgent",
        algorithm,
        sop_instance_uid=uids("sr"),
        series_instance_uid=uids("sr series"),
        seg=seg,
        content_datetime=CONTENT_TIME,
    )

    segmentation = hd.seg.segread(write(seg, tmp_path / "seg.dcm"))
    report = hd.sr.srread(write(sr, tmp_path / "sr.dcm"))

    assert segmentation.number_of_segments == 2
    assert [
        str(item.ReferencedSOPInstanceUID)
        for item in segmentation.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    ] == [str(source.SOPInstanceUID)]
    content = report.content
    assert isinstance(content, hd.sr.MeasurementReport)
    labels = {str(group.tracking_identifier) for group in content.get_image_measurement_groups()}
    assert {"Effusion", "Pneumothorax", "Cardiomegaly", "triage"} <= labels
    # the optional Image Library goes only where highdicom cannot describe the image, not always
    library = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "111028"]
    assert len(library) == (1 if "ImagerPixelSpacing" in SPACINGS[spacing] else 0)
