"""The series description the viewport draws from: display order, pixel format as served, modality LUT,
windows, palettes and overlay texts, all checked against the DICOM files; and the study page shell."""

from __future__ import annotations

import copy
import html
import json
import re
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from orthanc import OrthancConnection
from tests.viewer.viewport_files import relabelled, store

BULK_ACCEPT = f'multipart/related; type="application/octet-stream"; transfer-syntax={ExplicitVRLittleEndian}'


@pytest.fixture(scope="module")
def ct(orthanc: OrthancConnection, shared_data: Path) -> list[pydicom.Dataset]:
    """The real 3-slice CT, stored in reverse so that the order comes from the description, not Orthanc."""
    slices = [pydicom.dcmread(path) for path in sorted((shared_data / "dicom" / "ct_3slice").glob("*.dcm"))]
    store(orthanc, slices[::-1])
    return slices


def _palette_image(shared_data: Path) -> pydicom.Dataset:
    """A PALETTE COLOR image made from a real MR frame: 8-bit indices into a 256-entry 16-bit palette."""
    ds = relabelled(shared_data / "dicom" / "transfer_syntax" / "emri_small.dcm", "palette")
    frame = ds.pixel_array[0].astype(float)
    indices = np.round(frame / frame.max() * 255).astype(np.uint8)
    ds.NumberOfFrames = 1
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ramp = np.arange(256, dtype=np.uint16)
    channels = (ramp * 257, (255 - ramp) * 257, (ramp // 2) * 257)  # red, green, blue
    for offset, values in enumerate(channels, start=1):
        ds.add_new(0x00281100 + offset, "US", [256, 0, 16])  # descriptor: entries, first mapped, bits
        ds.add_new(0x00281200 + offset, "OW", values.astype("<u2").tobytes())
    ds.PixelData = indices.tobytes()
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.fixture(scope="module")
def others(orthanc: OrthancConnection, shared_data: Path) -> dict[str, pydicom.Dataset]:
    folder = shared_data / "dicom" / "transfer_syntax"
    files = {
        "multiframe": relabelled(folder / "emri_small_RLE.dcm", "images multiframe"),
        "ybr": relabelled(folder / "pydicom_SC_rgb_jpeg_dcmtk.dcm", "images ybr"),
        "mono1": relabelled(shared_data / "dicom" / "dx_chest" / "dx_image.dcm", "images mono1"),
        "palette": _palette_image(shared_data),
    }
    store(orthanc, list(files.values()))
    return files


def along(slices: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """The slices ascending along their normal (row x column cosines), computed here from the files."""

    def distance(ds: pydicom.Dataset) -> float:
        orientation = np.array(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        return float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float)))

    return sorted(slices, key=distance)


def renumbered(slices: list[pydicom.Dataset], label: str, numbers: list[int]) -> list[pydicom.Dataset]:
    """Copies of the real CT slices in a new series of their own, with these instance numbers."""
    copies = []
    for index, (source, number) in enumerate(zip(slices, numbers, strict=True)):
        ds = copy.deepcopy(source)
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["openaim slice order", label, "study"])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["openaim slice order", label, "series"])
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["openaim slice order", label, str(index)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = number
        copies.append(ds)
    return copies


def _uids(images: list[dict]) -> list[str]:
    return [image["instance_uid"] for image in images]


def test_slices_follow_their_geometry_not_instance_numbers_that_run_against_it(
    radiologist: TestClient, orthanc: OrthancConnection, ct: list[pydicom.Dataset]
) -> None:
    # 01, 02, 03 lie at z = -126.69, -127.69, -128.69 (axial): along the normal the order is 03, 02, 01.
    # Numbered 1, 3, 2, the instance numbers give 01, 03, 02: neither that order nor its reverse.
    against = renumbered(ct, "against", [1, 3, 2])
    store(orthanc, against)
    expected = [str(ds.SOPInstanceUID) for ds in along(against)]
    assert expected == [str(against[i].SOPInstanceUID) for i in (2, 1, 0)]
    assert _uids(_images(radiologist, against[0])["images"]) == expected
    # The first image, chosen from Orthanc's index without reading the files, is the same one.
    series_url = f"/api/studies/{against[0].StudyInstanceUID}/series/{against[0].SeriesInstanceUID}/images"
    assert _uids(radiologist.get(series_url, params={"first": "true"}).json()["images"]) == expected[:1]
    # So is the order of the series' bulk data, which the viewport loads from the first slice on.
    bulk = radiologist.get(
        f"/dicomweb/studies/{against[0].StudyInstanceUID}/series/{against[0].SeriesInstanceUID}",
        headers={"Accept": BULK_ACCEPT},
    )
    assert re.findall(rb"Content-Location: \S+/instances/([0-9.]+)/frames/1\r\n", bulk.content) == [
        uid.encode() for uid in expected
    ]
    mixed = renumbered(ct, "mixed geometry", [1, 3, 2])
    del mixed[1].ImagePositionPatient  # one slice without a place: the whole series by instance number
    store(orthanc, mixed)
    by_number = [str(mixed[i].SOPInstanceUID) for i in (0, 2, 1)]
    assert _uids(_images(radiologist, mixed[0])["images"]) == by_number


def _images(client: TestClient, ds: pydicom.Dataset) -> dict:
    response = client.get(f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/images")
    assert response.status_code == 200, response.text
    return response.json()


def test_ct_slices_in_display_order_with_modality_lut_and_window(
    radiologist: TestClient, ct: list[pydicom.Dataset]
) -> None:
    body = _images(radiologist, ct[0])
    assert [image["instance_uid"] for image in body["images"]] == [str(ds.SOPInstanceUID) for ds in along(ct)]
    assert body["modality"] == "CT"
    for image in body["images"]:
        ds = next(d for d in ct if d.SOPInstanceUID == image["instance_uid"])
        assert image["number"] == int(ds.InstanceNumber)
        assert (image["rows"], image["columns"], image["frames"]) == (ds.Rows, ds.Columns, 1)
        assert image["bits_allocated"] == ds.BitsAllocated and image["bits_stored"] == ds.BitsStored
        assert image["pixel_representation"] == ds.PixelRepresentation == 1
        assert image["rescale_slope"] == float(ds.RescaleSlope)
        assert image["rescale_intercept"] == float(ds.RescaleIntercept)
        assert image["windows"] == [{"center": float(ds.WindowCenter), "width": float(ds.WindowWidth)}]
        assert image["photometric"] == "MONOCHROME2" and image["voi_lut_function"] == "LINEAR"
        assert image["pixel_spacing"] == [float(v) for v in ds.PixelSpacing]
    info = body["info"]
    assert info["patient_id"] == ct[0].PatientID
    assert info["series_number"] == str(ct[0].SeriesNumber)
    assert info["study_date"] == f"{ct[0].StudyDate[:4]}-{ct[0].StudyDate[4:6]}-{ct[0].StudyDate[6:]}"


def test_describing_a_series_loads_its_frames_in_the_background(
    radiologist: TestClient, ct: list[pydicom.Dataset]
) -> None:
    body = _images(radiologist, ct[0])
    cache = radiologist.app.state.frame_source.cache
    wanted = {(image["instance_uid"], 1) for image in body["images"]}
    deadline = time.monotonic() + 15
    while not all(key in cache for key in wanted):
        assert time.monotonic() < deadline, "the series' frames were not loaded in the background"
        time.sleep(0.05)
    for ds in ct:
        assert cache.get((str(ds.SOPInstanceUID), 1)) == ds.pixel_array.astype("<i2").tobytes()


def test_multiframe_colour_monochrome1_and_palette_are_described_as_served(
    radiologist: TestClient, others: dict[str, pydicom.Dataset]
) -> None:
    (multiframe,) = _images(radiologist, others["multiframe"])["images"]
    assert multiframe["frames"] == 10
    (ybr,) = _images(radiologist, others["ybr"])["images"]
    assert others["ybr"].PhotometricInterpretation == "YBR_FULL"
    assert ybr["photometric"] == "RGB" and ybr["samples_per_pixel"] == 3
    (mono1,) = _images(radiologist, others["mono1"])["images"]
    assert mono1["photometric"] == "MONOCHROME1"
    assert mono1["windows"] == [{"center": 128.0, "width": 256.0}]
    (palette,) = _images(radiologist, others["palette"])["images"]
    assert palette["photometric"] == "PALETTE COLOR"
    source = others["palette"]
    for colour in ("Red", "Green", "Blue"):
        lut = palette["palette"][colour.lower()]
        assert (lut["first_mapped"], lut["bits"]) == (0, 16)
        expected = np.frombuffer(source[f"{colour}PaletteColorLookupTableData"].value, dtype="<u2")
        assert lut["values"] == expected.tolist()


def test_first_image_alone_is_described_as_the_whole_series_describes_it(
    radiologist: TestClient, ct: list[pydicom.Dataset], others: dict[str, pydicom.Dataset]
) -> None:
    for ds in (ct[0], *others.values()):
        url = f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/images"
        whole = radiologist.get(url).json()
        first = radiologist.get(url, params={"first": "true"}).json()
        assert whole["complete"] is True
        if whole["images"][0]["photometric"] == "PALETTE COLOR":  # needs its tables: no shortcut
            assert first == whole
            continue
        assert first["complete"] is False
        assert first["images"] == whole["images"][:1]
        assert (first["modality"], first["info"]) == (whole["modality"], whole["info"])


def test_the_description_comes_from_the_files_the_series_load_read_and_matches_orthancs_metadata(
    radiologist: TestClient, ct: list[pydicom.Dataset], others: dict[str, pydicom.Dataset]
) -> None:
    """Orthanc's series metadata reads every file a second time, while the frames load: the description is
    built from the headers of the files the load parsed, the same as from the metadata."""
    app = radiologist.app
    asked: list[str] = []
    archive = app.state.archive  # type: ignore[attr-defined]
    by_metadata = archive.series_metadata

    async def series_metadata(study_uid: str, series_uid: str) -> list[dict[str, object]]:
        asked.append(series_uid)
        return await by_metadata(study_uid, series_uid)

    for name, ds in {"ct": ct[0], **{k: v for k, v in others.items() if k != "palette"}}.items():
        url = f"/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/images"
        archive.series_metadata = series_metadata
        from_load = radiologist.get(url).json()
        assert asked == [], f"{name}: Orthanc's series metadata was asked for"
        app.state.frame_source._headers.clear()  # type: ignore[attr-defined]  # the load's headers gone
        from_metadata = radiologist.get(url).json()
        assert asked == [str(ds.SeriesInstanceUID)], name
        assert from_load == from_metadata, name
        asked.clear()
    archive.series_metadata = by_metadata


def test_unknown_series_is_404_and_bad_uid_422(radiologist: TestClient, ct: list[pydicom.Dataset]) -> None:
    study = ct[0].StudyInstanceUID
    assert radiologist.get(f"/api/studies/{study}/series/1.2.3.4.5/images").status_code == 404
    assert radiologist.get(f"/api/studies/{study}/series/1.2.x/images").status_code == 422


def test_study_page_is_a_viewport_with_series_thumbnails_and_the_ai_panel_slot(
    radiologist: TestClient, ct: list[pydicom.Dataset]
) -> None:
    page = radiologist.get(f"/studies/{ct[0].StudyInstanceUID}").text
    assert 'id="viewport"' in page and "<canvas" in page
    assert '<aside id="ai-panel"' in page
    assert '<script type="module" src="/static/reading/study.js"></script>' in page
    series = str(ct[0].SeriesInstanceUID)
    assert f'data-series-uid="{series}"' in page
    assert f"/series/{series}/instances/{ct[1].SOPInstanceUID}/thumbnail.png?size=" in page  # middle slice
    assert " style=" not in page  # strict CSP: no style attributes
    # The first image's description comes with the page: the viewport's first request is for pixels.
    carried = re.search(r"data-first-image='([^']*)'", page)
    assert carried is not None
    images_url = f"/api/studies/{ct[0].StudyInstanceUID}/series/{series}/images"
    assert (
        json.loads(html.unescape(carried.group(1)))
        == radiologist.get(images_url, params={"first": "true"}).json()
    )
