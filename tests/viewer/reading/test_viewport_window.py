"""The window the canvas viewport opens a frame with (frontend/static/reading/viewport.js), run in Node: the
grey every stored value gets, compared with what inference/runtime/pixels.py gives the same file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from inference.runtime.pixels import display_frame

VIEWPORT = Path(__file__).resolve().parents[3] / "frontend" / "static" / "reading" / "viewport.js"

# The method the viewport calls on a new frame and on reset, then the grey of every stored value it may hold.
OPENING_GREYS = """
const { Viewport, greyLevel } = await import(process.argv[1]);
let input = "";
for await (const chunk of process.stdin) input += chunk;
const { image, values } = JSON.parse(input);
const window = Viewport.prototype._initialWindow.call(null, image, Uint16Array.from(values));
const size = 2 ** image.bits_allocated;
const greys = Array.from({ length: size }, (_, raw) => greyLevel(raw, image, window));
console.log(JSON.stringify({ window, greys }));
"""

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to import the viewport")


def image_header(bits_stored: int, *, slope: float = 1, intercept: float = 0, signed: bool = False) -> dict:
    """The image description the viewer's images route hands the viewport, for a greyscale frame."""
    return {
        "windows": [],
        "samples_per_pixel": 1,
        "photometric": "MONOCHROME2",
        "bits_allocated": 8 if bits_stored <= 8 else 16,
        "bits_stored": bits_stored,
        "pixel_representation": 1 if signed else 0,
        "rescale_slope": slope,
        "rescale_intercept": intercept,
        "voi_lut_function": "LINEAR",
    }


def opening_greys(image: dict, values: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """The viewport's opening window and the grey (0..255) of every stored word, indexed by the word."""
    done = subprocess.run(
        ["node", "--input-type=module", "-e", OPENING_GREYS, VIEWPORT.as_uri()],
        input=json.dumps({"image": image, "values": values.ravel().tolist()}),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer["window"], np.array(answer["greys"])


def test_an_8_bit_radiograph_without_a_window_opens_as_stored_as_the_model_sees_it(shared_data: Path) -> None:
    png = np.asarray(Image.open(shared_data / "cxr14" / "small" / "00005610_000.png"))  # values 54..241
    _, greys = opening_greys(image_header(8), png)
    np.testing.assert_array_equal(greys[png], png)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_pixel_data(png, "MONOCHROME2", 8)
    np.testing.assert_array_equal(greys[png], display_frame(ds))  # screen and model agree


def test_the_identity_window_goes_through_the_rescale() -> None:
    values = np.arange(40, 200, dtype=np.uint8)
    window, greys = opening_greys(image_header(8, slope=2, intercept=-100), values)
    assert window == {"center": 155.5, "width": 511}  # -100..410 in modality units, each value as it is
    np.testing.assert_array_equal(greys, np.arange(256))


def test_signed_8_bit_values_open_with_the_identity_of_their_range() -> None:
    values = np.arange(10, 60, dtype=np.uint8)
    _, greys = opening_greys(image_header(8, signed=True), values)
    stored = np.where(np.arange(256) >= 128, np.arange(256) - 256, np.arange(256))
    np.testing.assert_array_equal(greys, stored + 128)
