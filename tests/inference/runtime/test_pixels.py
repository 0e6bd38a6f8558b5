"""A model reads a DICOM object as a radiologist sees it: decoded from any transfer syntax, through the
modality LUT and the file's window, dense = bright, 8 bits. What is not a picture, or is broken, is refused
with a reason an administrator can act on, from the header, before anything is decoded."""

from __future__ import annotations

import io
import math
import shutil
import struct
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (
    EncapsulatedPDFStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from inference.runtime.pixels import (
    MAX_PIXELS_PER_FRAME,
    UnreadableImage,
    check_image,
    display_frame,
    read_dataset,
    representative_frame,
)

# ---- helpers ------------------------------------------------------------------------------------------


def dicom(shared_data: Path, name: str) -> Path:
    return shared_data / "dicom" / name


def read(path: Path) -> Dataset:
    return read_dataset(path.read_bytes())


def synthetic(
    pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 16, **attributes: object
) -> Dataset:
    """A small uncompressed Secondary Capture image with exactly these stored values."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.set_pixel_data(pixels, photometric, bits_stored)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def ramp(bits_stored: int = 12, signed: bool = False) -> np.ndarray:
    """Every stored value of a 12-bit range exactly once: 64 x 64 = 4096."""
    values = np.arange(4096, dtype=np.int32) - (2048 if signed else 0)
    return values.reshape(64, 64).astype(np.int16 if signed else np.uint16)


def as_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def refusal(call: object, *args: object) -> str:
    with pytest.raises(UnreadableImage) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.reason


# The VOI functions as PS3.3 C.11.2.1.2 and C.11.2.1.3 write them, value by value, output range 0..255.


def linear(x: float, center: float, width: float) -> float:
    if x <= center - 0.5 - (width - 1) / 2:
        return 0.0
    if x > center - 0.5 + (width - 1) / 2:
        return 255.0
    return ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0


def linear_exact(x: float, center: float, width: float) -> float:
    if x <= center - width / 2:
        return 0.0
    if x > center + width / 2:
        return 255.0
    return ((x - center) / width + 0.5) * 255.0


def sigmoid(x: float, center: float, width: float) -> float:
    exponent = -4 * (x - center) / width
    return 0.0 if exponent > 700 else 255.0 / (1 + math.exp(exponent))  # exp(700+) overflows a float


def standard(values: np.ndarray, function: object, center: float, width: float) -> np.ndarray:
    out = [function(float(x), center, width) for x in values.ravel()]  # type: ignore[operator]
    return np.rint(np.array(out)).reshape(values.shape).astype(np.uint8)


def stretched(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return np.rint((values - values.min()) / (values.max() - values.min()) * 255).astype(np.uint8)


# ---- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"%PDF-1.4 not dicom at all", b"\x89PNG\r\n\x1a\n" + bytes(300), b""])
def test_a_file_that_is_not_dicom_is_refused(content: bytes) -> None:
    assert "not a DICOM file" in refusal(read_dataset, content)


@pytest.mark.parametrize(
    "name",
    [
        "ct_3slice/01.dcm",  # uncompressed: pydicom would read the pixel data short without a word
        "dx_chest/dx_image.dcm",
        "transfer_syntax/MR2_J2KR.dcm",  # encapsulated: pydicom would drop the pixel data with a warning
        "transfer_syntax/emri_small_RLE.dcm",
        "transfer_syntax/pydicom_SC_rgb_jpeg_dcmtk.dcm",
    ],
)
@pytest.mark.filterwarnings("ignore:End of file reached")
def test_a_file_cut_in_half_is_refused_as_truncated(shared_data: Path, name: str) -> None:
    data = dicom(shared_data, name).read_bytes()
    assert "truncated" in refusal(read_dataset, data[: len(data) // 2])


def test_pixel_data_shorter_than_the_header_promises_is_refused_before_decoding() -> None:
    ds = synthetic(ramp(), bits_stored=12)
    ds.PixelData = ds.PixelData[:1000]
    assert (
        refusal(check_image, ds) == "the pixel data is truncated: 1000 bytes where the header promises 8192"
    )


def test_a_structured_report_is_not_an_image(shared_data: Path) -> None:
    ds = read(dicom(shared_data, "foreign_ai/highdicom/sr_document.dcm"))
    assert refusal(check_image, ds) == (
        "not an image: its SOP class is Comprehensive 3D SR Storage and it has no Pixel Data"
    )


def test_an_encapsulated_pdf_is_not_an_image() -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DOC"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    reason = refusal(check_image, read_dataset(as_bytes(ds)))
    assert reason == "not an image: its SOP class is Encapsulated PDF Storage and it has no Pixel Data"


def test_another_algorithms_segmentation_is_not_a_picture_to_read(shared_data: Path) -> None:
    ds = read(dicom(shared_data, "ct_3slice_seg/liver_seg.dcm"))
    assert refusal(check_image, ds) == (
        "not a picture of the patient: its SOP class is Segmentation Storage, the result of another algorithm"
    )


def test_a_1x1_image_is_too_small_and_says_so() -> None:
    ds = synthetic(np.array([[7]], dtype=np.uint16))
    assert refusal(check_image, ds) == (
        "the image is 1 x 1 pixels: too small for a model to read (at least 32 pixels a side)"
    )


def test_the_16x16_reference_images_are_too_small(shared_data: Path) -> None:
    ds = read(dicom(shared_data, "foreign_ai/referenced_ct_16x16/17106.dcm"))
    assert "16 x 16 pixels: too small" in refusal(check_image, ds)


def test_an_absurd_size_is_refused_from_the_header_without_allocating_it() -> None:
    ds = synthetic(np.zeros((64, 64), dtype=np.uint16))
    ds.Rows = ds.Columns = 20000  # 400 million pixels claimed, 8 kB present
    data = as_bytes(ds)
    tracemalloc.start()
    try:
        loaded = read_dataset(data)
        reason = refusal(display_frame, loaded)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason == (
        f"the header claims 20000 x 20000 pixels per frame, more than the {MAX_PIXELS_PER_FRAME} "
        "pixels this platform decodes"
    )
    assert peak < 5_000_000  # a decoded frame would need 800 MB


@pytest.mark.parametrize(
    ("photometric", "expected"),
    [
        ("YBR_PARTIAL_420", "photometric interpretation 'YBR_PARTIAL_420' is not supported"),
        ("HSV", "photometric interpretation 'HSV' is not supported"),
    ],
)
def test_an_unsupported_photometric_interpretation_is_refused(photometric: str, expected: str) -> None:
    ds = synthetic(ramp())
    ds.PhotometricInterpretation = photometric
    assert refusal(check_image, ds).startswith(expected)


def test_one_bit_pixels_are_a_mask_not_a_picture() -> None:
    ds = synthetic(np.zeros((64, 64), dtype=np.uint8), bits_stored=8)
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    assert refusal(check_image, ds) == "the pixels are 1 bit deep: a binary mask, not a picture"


def test_a_missing_header_value_is_named() -> None:
    ds = synthetic(ramp())
    del ds.Columns
    assert refusal(check_image, ds) == "the header has no valid Columns"


def test_a_jpeg_stream_the_decoder_rejects_is_refused_with_the_decoders_words(shared_data: Path) -> None:
    # pydicom's JPEG-lossy.dcm has a malformed start-of-scan; libjpeg refuses it (dcmtk only warns).
    ds = read(dicom(shared_data, "transfer_syntax/pydicom_JPEG-lossy.dcm"))
    check_image(ds)  # the header is fine
    reason = refusal(display_frame, ds)
    assert reason.startswith("the pixel data could not be decoded (JPEG Extended (Process 2 and 4)):")
    assert "libjpeg" in reason


def test_corrupt_compressed_pixel_data_is_refused() -> None:
    ds = synthetic(ramp(), bits_stored=12)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + bytes(60)])
    assert refusal(display_frame, ds).startswith("the pixel data could not be decoded (RLE Lossless):")


def test_rle_that_overruns_its_frame_is_refused_although_the_decoder_panics() -> None:
    # pylibjpeg-rle is Rust: on this data it panics, which Python sees as a BaseException, not an Exception.
    segment = bytes([0x81, 0x07]) * 70  # 70 runs of 128 bytes: 8960 bytes for a 4096-byte segment
    header = struct.pack("<16L", 2, 64, 64 + len(segment), *([0] * 13))
    ds = synthetic(ramp(), bits_stored=12)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([header + segment + segment])
    assert refusal(display_frame, ds).startswith("the pixel data could not be decoded (RLE Lossless):")


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    "name",
    ["transfer_syntax/pydicom_MR_small.dcm", "transfer_syntax/emri_small_RLE.dcm", "dx_chest/dx_image.dcm"],
)
def test_corrupted_files_give_a_picture_or_a_reason_never_another_error(shared_data: Path, name: str) -> None:
    original = dicom(shared_data, name).read_bytes()
    rng = np.random.default_rng(2024)
    outcomes = {"picture": 0, "refused": 0}
    for _ in range(150):
        data = bytearray(original)
        for position in rng.integers(132, len(data), size=rng.integers(1, 6)):  # after the preamble
            data[position] = rng.integers(0, 256)
        try:
            ds = read_dataset(bytes(data))
            image = display_frame(ds, representative_frame(ds))
        except UnreadableImage:
            outcomes["refused"] += 1
        else:
            assert image.dtype == np.uint8 and image.ndim == 2
            outcomes["picture"] += 1
    assert outcomes["picture"] > 0 and outcomes["refused"] > 0, outcomes


@pytest.mark.parametrize(
    ("element", "stage"),
    [(b"\x28\x00\x04\x00CS", check_image), (b"\x28\x00\x50\x10DS", display_frame)],  # photometric, window
)
def test_an_element_with_a_corrupt_vr_is_a_reason_not_a_crash(
    shared_data: Path, element: bytes, stage: object
) -> None:
    data = dicom(shared_data, "transfer_syntax/pydicom_MR_small.dcm").read_bytes()
    assert data.count(element) == 1
    ds = read_dataset(data.replace(element, element[:4] + b"\x44\x11"))  # pydicom reads values lazily
    assert refusal(stage, ds).startswith("the header is malformed: Unknown Value Representation")


def test_an_empty_header_value_is_named() -> None:
    ds = synthetic(ramp(), bits_stored=12)
    ds.Rows = None
    assert refusal(check_image, ds) == "the header has no valid Rows"


def test_a_frame_that_does_not_exist_is_a_caller_error(shared_data: Path) -> None:
    ds = read(dicom(shared_data, "transfer_syntax/emri_small.dcm"))
    with pytest.raises(IndexError, match="frame 10 does not exist: the object has 10 frame"):
        display_frame(ds, 10)


# ---- every transfer syntax gives the same picture --------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "variant"),
    [
        ("emri_small.dcm", "emri_small_RLE.dcm"),
        ("emri_small.dcm", "emri_small_big_endian.dcm"),
        ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm"),
        ("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm"),
        ("pydicom_MR_small.dcm", "pydicom_MR_small_implicit.dcm"),
        ("pydicom_MR_small.dcm", "pydicom_MR_small_RLE.dcm"),
        ("pydicom_MR_small.dcm", "pydicom_MR_small_jp2klossless.dcm"),
        ("pydicom_MR_small.dcm", "pydicom_MR_small_jpeg_ls_lossless.dcm"),
    ],
)
def test_lossless_encodings_give_identical_pictures_for_every_frame(
    shared_data: Path, reference: str, variant: str
) -> None:
    expected = read(dicom(shared_data, f"transfer_syntax/{reference}"))
    actual = read(dicom(shared_data, f"transfer_syntax/{variant}"))
    assert actual.file_meta.TransferSyntaxUID != expected.file_meta.TransferSyntaxUID
    frames = int(expected.get("NumberOfFrames", 1))
    for frame in range(frames):
        np.testing.assert_array_equal(display_frame(actual, frame), display_frame(expected, frame))


def test_jpeg_baseline_ycbcr_is_close_to_the_rle_rgb_original(shared_data: Path) -> None:
    rgb = read(dicom(shared_data, "transfer_syntax/pydicom_SC_rgb_rle.dcm"))
    jpeg = read(dicom(shared_data, "transfer_syntax/pydicom_SC_rgb_jpeg_dcmtk.dcm"))
    assert jpeg.PhotometricInterpretation == "YBR_FULL"
    assert_close(display_frame(jpeg), display_frame(rgb))


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Lossy JPEG at dcmtk's default quality: a grey level or two on average, never a different picture."""
    difference = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert actual.shape == expected.shape
    assert difference.mean() < 3.0 and difference.max() <= 20, (difference.mean(), difference.max())


def dcmtk(tool: str, *arguments: str | Path) -> None:
    assert shutil.which(tool), f"{tool} is missing: the Makefile installs Debian's dcmtk"
    subprocess.run([tool, *map(str, arguments)], check=True, capture_output=True)


@pytest.mark.parametrize(
    ("source", "option", "syntax", "lossless", "frame"),
    [
        ("ct_3slice/01.dcm", "+e1", "1.2.840.10008.1.2.4.70", True, 0),  # JPEG lossless SV1, signed 16-bit
        ("dx_chest/dx_image.dcm", "+eb", "1.2.840.10008.1.2.4.50", False, 0),  # baseline, 8-bit MONOCHROME1
        ("transfer_syntax/emri_small.dcm", "+ee", "1.2.840.10008.1.2.4.51", False, 5),  # extended, 12-bit
    ],
)
def test_jpeg_made_by_dcmtk_decodes_to_the_uncompressed_picture(
    shared_data: Path, tmp_path: Path, source: str, option: str, syntax: str, lossless: bool, frame: int
) -> None:
    original = dicom(shared_data, source)
    compressed = tmp_path / "compressed.dcm"
    dcmtk("dcmcjpeg", option, original, compressed)
    ds = read(compressed)
    assert ds.file_meta.TransferSyntaxUID == syntax
    expected = display_frame(read(original), frame)
    if lossless:
        np.testing.assert_array_equal(display_frame(ds, frame), expected)
    else:
        assert_close(display_frame(ds, frame), expected)


def test_the_nema_jpeg_lossless_sample_matches_dcmtks_decoding(shared_data: Path, tmp_path: Path) -> None:
    decoded = tmp_path / "decoded.dcm"
    dcmtk("dcmdjpeg", dicom(shared_data, "transfer_syntax/JPEG-LL.dcm"), decoded)
    expected = display_frame(read(decoded))
    np.testing.assert_array_equal(
        display_frame(read(dicom(shared_data, "transfer_syntax/JPEG-LL.dcm"))), expected
    )


@pytest.mark.parametrize(
    ("name", "shape"),
    [("transfer_syntax/MR2_J2KR.dcm", (1024, 1024)), ("transfer_syntax/US1_J2KR.dcm", (480, 640))],
)
def test_jpeg_2000_images_decode_to_a_full_range_picture(shared_data: Path, name: str, shape: tuple) -> None:
    image = display_frame(read(dicom(shared_data, name)))
    assert image.shape == shape and image.dtype == np.uint8
    assert image.min() == 0 and image.max() == 255
    assert len(np.unique(image)) > 100  # a picture, not a constant or a few levels


# ---- the grey levels: modality LUT, VOI, MONOCHROME1 -----------------------------------------------------


def test_real_ct_is_in_hounsfield_units_through_its_soft_tissue_window(shared_data: Path) -> None:
    ds = read(dicom(shared_data, "ct_3slice/01.dcm"))
    assert (ds.WindowCenter, ds.WindowWidth, ds.RescaleIntercept) == (40, 400, -1024)
    hounsfield = ds.pixel_array.astype(np.float64) * 1 - 1024
    expected = np.rint(np.clip((hounsfield - 39.5) / 399 + 0.5, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(display_frame(ds), expected)


def test_real_monochrome1_radiograph_shows_bone_bright(shared_data: Path) -> None:
    ds = read(dicom(shared_data, "dx_chest/dx_image.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    as_stored = display_frame(ds, invert_monochrome1=False)
    shown = display_frame(ds)
    np.testing.assert_array_equal(shown, 255 - as_stored)
    expected = 255 - standard(ds.pixel_array, linear, float(ds.WindowCenter), float(ds.WindowWidth))
    np.testing.assert_array_equal(shown, expected)


@pytest.mark.parametrize(
    ("function", "name"), [(linear, "LINEAR"), (linear_exact, "LINEAR_EXACT"), (sigmoid, "SIGMOID")]
)
@pytest.mark.parametrize(("center", "width"), [(40.0, 400.0), (-600.0, 1500.0), (1000.0, 1.0), (3.5, 2.0)])
def test_windowing_follows_ps3_3_c_11_2(function: object, name: str, center: float, width: float) -> None:
    ds = synthetic(ramp(), bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, name
    hounsfield = ramp().astype(np.float64) - 1024
    np.testing.assert_array_equal(display_frame(ds), standard(hounsfield, function, center, width))


def test_the_first_of_several_windows_is_used() -> None:
    several = synthetic(ramp(), bits_stored=12, WindowCenter=[1000, 3000], WindowWidth=[500, 100])
    first = synthetic(ramp(), bits_stored=12, WindowCenter=1000, WindowWidth=500)
    np.testing.assert_array_equal(display_frame(several), display_frame(first))
    np.testing.assert_array_equal(display_frame(first), standard(ramp(), linear, 1000, 500))


def test_rescale_slope_is_applied_before_the_window() -> None:
    ds = synthetic(
        ramp(), bits_stored=12, RescaleSlope=0.5, RescaleIntercept=100, WindowCenter=600, WindowWidth=800
    )
    np.testing.assert_array_equal(display_frame(ds), standard(ramp() * 0.5 + 100, linear, 600, 800))


def voi_lut(descriptor: list[int], data: list[int] | bytes) -> Sequence:
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.add_new("LUTData", "US" if isinstance(data, list) else "OW", data)
    return Sequence([item])


def test_a_voi_lut_sequence_maps_values_through_its_table() -> None:
    # 1024 entries of 8 bits from stored value 1000: more entries than an 8-bit index can count
    table = (np.arange(1024) // 4).astype(np.uint16)
    ds = synthetic(ramp(), bits_stored=12, VOILUTSequence=voi_lut([1024, 1000, 8], table.tolist()))
    expected = table[np.clip(ramp().astype(np.int64), 1000, 2023) - 1000].astype(np.uint8)
    np.testing.assert_array_equal(display_frame(ds), expected)


@pytest.mark.parametrize("packing", ["words", "bytes"])
def test_an_8_bit_voi_lut_in_ow_is_read_as_16_bit_words_or_packed_bytes(packing: str) -> None:
    table = (255 - np.arange(256)).astype(np.uint8)
    data = table.astype("<u2").tobytes() if packing == "words" else table.tobytes()
    pixels = np.arange(64 * 64).reshape(64, 64).astype(np.uint16) % 256
    ds = synthetic(pixels, bits_stored=8, VOILUTSequence=voi_lut([256, 0, 8], data))
    np.testing.assert_array_equal(display_frame(ds), 255 - pixels)


def test_a_voi_lut_declared_16_bits_that_uses_12_is_shown_full_range() -> None:
    table = np.arange(4096, dtype=np.uint16)  # identity, 0..4095, though the descriptor says 16 bits
    ds = synthetic(ramp(), bits_stored=12, VOILUTSequence=voi_lut([4096, 0, 16], table.tobytes()))
    np.testing.assert_array_equal(display_frame(ds), stretched(ramp()))


def test_a_voi_lut_is_preferred_to_a_window_as_pydicom_does() -> None:
    table = (255 - np.arange(256)).tolist()
    pixels = np.arange(64 * 64).reshape(64, 64).astype(np.uint16) % 256
    ds = synthetic(
        pixels, bits_stored=8, WindowCenter=128, WindowWidth=256, VOILUTSequence=voi_lut([256, 0, 8], table)
    )
    np.testing.assert_array_equal(display_frame(ds), 255 - pixels)


def test_a_modality_lut_sequence_replaces_the_rescale() -> None:
    ds = synthetic(ramp(), bits_stored=12)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = (4095 - np.arange(4096)).tolist()  # an inverting modality LUT
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = Sequence([item])
    ds["ModalityLUTSequence"][0]["LUTData"].VR = "US"
    np.testing.assert_array_equal(display_frame(ds), stretched(4095 - ramp().astype(np.int32)))


def test_the_stretch_spans_the_values_in_the_frame_not_those_its_lut_could_give() -> None:
    pixels = np.where(np.arange(40 * 40).reshape(40, 40) % 2 == 0, 10, 20).astype(np.uint16)
    ds = synthetic(pixels, bits_stored=12)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    table = np.arange(4096)
    table[15] = 4095  # a value between the frame's two, absent from it, mapped far above both
    item.LUTData = table.tolist()
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = Sequence([item])
    ds["ModalityLUTSequence"][0]["LUTData"].VR = "US"
    np.testing.assert_array_equal(display_frame(ds), np.where(pixels == 10, 0, 255))


def test_without_a_window_the_frames_own_range_is_stretched_to_0_255() -> None:
    pixels = (ramp()[8:48, 8:48] + 500).astype(np.uint16)
    np.testing.assert_array_equal(display_frame(synthetic(pixels, bits_stored=12)), stretched(pixels))


def test_voi_false_ignores_the_files_window() -> None:
    ds = synthetic(ramp(), bits_stored=12, WindowCenter=100, WindowWidth=50)
    np.testing.assert_array_equal(display_frame(ds, voi=False), stretched(ramp()))
    assert not np.array_equal(display_frame(ds), stretched(ramp()))


def test_a_window_pydicom_refuses_falls_back_to_the_stored_range() -> None:
    ds = synthetic(ramp(), bits_stored=12, WindowCenter=100, WindowWidth=0)  # LINEAR needs a width >= 1
    np.testing.assert_array_equal(display_frame(ds), stretched(ramp()))


def test_a_uniform_frame_is_black_not_a_division_by_zero() -> None:
    image = display_frame(synthetic(np.full((40, 40), 7, dtype=np.uint16), bits_stored=12))
    assert image.dtype == np.uint8 and not image.any()


def test_monochrome1_is_inverted_after_the_window() -> None:
    ds = synthetic(ramp(), "MONOCHROME1", 12, WindowCenter=1000, WindowWidth=500)
    image = display_frame(ds)
    assert image.ravel()[0] == 255  # stored 0, below the window: least dense, shown white in MONOCHROME1
    assert image.ravel()[-1] == 0  # above the window: shown black
    np.testing.assert_array_equal(image, 255 - standard(ramp(), linear, 1000, 500))


def test_signed_pixels_keep_their_sign() -> None:
    ds = synthetic(ramp(signed=True), bits_stored=12, WindowCenter=0, WindowWidth=1000)
    assert ds.PixelRepresentation == 1
    np.testing.assert_array_equal(display_frame(ds), standard(ramp(signed=True), linear, 0, 1000))


@pytest.mark.parametrize("bits_stored", [8, 10, 12, 14, 16])
def test_any_bits_stored_spans_the_full_grey_range(bits_stored: int) -> None:
    pixels = np.linspace(0, 2**bits_stored - 1, 64 * 64).astype(np.uint16).reshape(64, 64)
    ds = synthetic(pixels, bits_stored=bits_stored)
    np.testing.assert_array_equal(display_frame(ds), stretched(pixels))


def test_32_bit_pixels_span_the_full_grey_range() -> None:
    pixels = np.linspace(0, 2**32 - 1, 64 * 64).astype(np.uint32).reshape(64, 64)
    ds = synthetic(np.zeros((64, 64), dtype=np.uint16))  # pydicom writes no 32-bit pixels: set them by hand
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    ds.PixelData = pixels.astype("<u4").tobytes()
    np.testing.assert_array_equal(display_frame(ds), stretched(pixels))


def test_garbage_above_bits_stored_is_masked() -> None:
    clean = synthetic(ramp(), bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    dirty = synthetic(ramp(), bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    dirty.PixelData = (ramp() | 0xA000).astype("<u2").tobytes()  # overlay bits or noise in bits 13..16
    np.testing.assert_array_equal(display_frame(dirty), display_frame(clean))


def test_eight_bit_images_are_read_as_they_are_stored() -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16).repeat(2, axis=0).repeat(2, axis=1)
    np.testing.assert_array_equal(display_frame(synthetic(pixels, bits_stored=8)), pixels)


def nih_as_plain_dx(shared_data: Path, name: str) -> tuple[Dataset, np.ndarray]:
    """A real NIH ChestX-ray14 PNG wrapped as a DX with no window, as a PACS import of it would be."""
    png = np.asarray(Image.open(shared_data / "cxr14" / "small" / name))
    ds = synthetic(png, bits_stored=8)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    ds.Modality = "DX"
    return ds, png


@pytest.mark.parametrize("name", ["00005610_000.png", "00001166_000.png"])  # 54..241 and 0..203: not 0..255
def test_an_8_bit_radiograph_without_a_window_is_shown_as_stored_not_stretched(
    shared_data: Path, name: str
) -> None:
    ds, png = nih_as_plain_dx(shared_data, name)
    assert "WindowCenter" not in ds and (png.min() > 0 or png.max() < 255)
    np.testing.assert_array_equal(display_frame(ds), png)
    np.testing.assert_array_equal(display_frame(ds, voi=False), png)


def test_an_8_bit_image_without_a_window_is_identity_through_its_rescale() -> None:
    pixels = np.arange(40, 200, dtype=np.uint8).reshape(8, 20).repeat(5, axis=0).repeat(2, axis=1)
    ds = synthetic(pixels, bits_stored=8, RescaleSlope=2, RescaleIntercept=-100)
    # Identity spans what the stored bits hold (0..255, -100..410 after the rescale), not the frame's range.
    np.testing.assert_array_equal(display_frame(ds), pixels)


# ---- colour -----------------------------------------------------------------------------------------------


def colour_bars() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)


def test_rgb_becomes_bt601_luma_as_pil_computes_it() -> None:
    rgb = colour_bars()
    expected = np.asarray(Image.fromarray(rgb, mode="RGB").convert("L"))
    difference = np.abs(display_frame(synthetic(rgb, "RGB", 8)).astype(int) - expected)
    assert difference.max() <= 1  # PIL rounds with integer arithmetic


def test_ycbcr_is_converted_to_rgb_before_the_luma() -> None:
    rgb = colour_bars()
    ycbcr = convert_color_space(rgb, "RGB", "YBR_FULL")
    from_rgb = display_frame(synthetic(rgb, "RGB", 8))
    from_ycbcr = display_frame(synthetic(ycbcr, "YBR_FULL", 8))
    assert np.abs(from_ycbcr.astype(int) - from_rgb).max() <= 2  # 8-bit round trip through YCbCr


def test_palette_colour_is_looked_up_then_reduced_to_luma() -> None:
    indices = (np.arange(64 * 64) % 4).reshape(64, 64).astype(np.uint8)
    ds = synthetic(indices, "PALETTE COLOR", 8)
    red, green, blue = [0, 65535, 0, 0], [0, 0, 65535, 0], [0, 0, 0, 65535]
    for name, table in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", np.array(table, dtype="<u2").tobytes())
    expected = np.array([0, 76, 150, 29], dtype=np.uint8)[indices]  # black, red, green, blue by BT.601
    np.testing.assert_array_equal(display_frame(ds), expected)


# ---- frames ------------------------------------------------------------------------------------------------


def test_the_frame_index_selects_the_frame(shared_data: Path) -> None:
    ds = read(dicom(shared_data, "transfer_syntax/emri_small.dcm"))
    whole = pydicom.dcmread(dicom(shared_data, "transfer_syntax/emri_small.dcm")).pixel_array
    for frame in (0, 4, 9):
        np.testing.assert_array_equal(display_frame(ds, frame), stretched(whole[frame]))
    assert not np.array_equal(display_frame(ds, 0), display_frame(ds, 9))


def test_the_representative_frame_is_the_middle_one(shared_data: Path) -> None:
    assert representative_frame(read(dicom(shared_data, "transfer_syntax/emri_small.dcm"))) == 5
    assert representative_frame(read(dicom(shared_data, "ct_3slice/01.dcm"))) == 0


def test_an_enhanced_object_takes_rescale_and_window_from_its_functional_groups() -> None:
    frames = np.stack([ramp(), ramp(), ramp()])
    ds = synthetic(frames, bits_stored=12)
    ds.SOPClassUID = EnhancedMRImageStorage
    shared = Dataset()
    rescale = Dataset()
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 2, -1000, "US"
    shared.PixelValueTransformationSequence = Sequence([rescale])
    default_window = Dataset()
    default_window.WindowCenter, default_window.WindowWidth = 0, 2000
    shared.FrameVOILUTSequence = Sequence([default_window])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for own_window in ((500, 1000), None, (3000, 400)):
        group = Dataset()
        if own_window is not None:
            window = Dataset()
            window.WindowCenter, window.WindowWidth = own_window
            group.FrameVOILUTSequence = Sequence([window])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)

    values = ramp() * 2.0 - 1000
    np.testing.assert_array_equal(display_frame(ds, 0), standard(values, linear, 500, 1000))
    np.testing.assert_array_equal(display_frame(ds, 1), standard(values, linear, 0, 2000))  # the shared one
    np.testing.assert_array_equal(display_frame(ds, 2), standard(values, linear, 3000, 400))
    assert "RescaleSlope" not in ds  # the dataset is left as it was given
