"""Seeded hostile DICOM files and the walk through every viewer path that opens one: shared by the fuzz
test (tests/viewer/test_fuzz.py) and its longer run (bench/bench_fuzz.py).

Each mutation starts from a real file in ../shared/data and is deterministic for its (seed, index): byte
flips (anywhere, or in a compressed frame's own header), truncations, header fields set to hostile values
(Rows, Columns, Number of Frames, Bits Allocated, Samples per Pixel, the transfer syntax...), elements
removed, and sequences nested deep. Every file gets UIDs of its own, so each is its own study and series.
"""

from __future__ import annotations

import copy
import io
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from pydicom import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

# Small real files in the encodings the viewer decodes itself or hands to Orthanc.
SOURCES = (
    "ct_3slice/01.dcm",  # CT, 512 x 512, 16-bit signed, explicit VR little endian
    "dx_chest/dx_image.dcm",  # a chest radiograph
    "transfer_syntax/emri_small.dcm",  # multi-frame, native
    "transfer_syntax/emri_small_big_endian.dcm",
    "transfer_syntax/emri_small_RLE.dcm",  # multi-frame RLE
    "transfer_syntax/pydicom_MR_small_RLE.dcm",
    "transfer_syntax/pydicom_SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR
    "transfer_syntax/pydicom_JPEG-lossy.dcm",  # 12-bit JPEG extended
    "transfer_syntax/pydicom_MR_small_jp2klossless.dcm",
    "transfer_syntax/pydicom_MR_small_jpeg_ls_lossless.dcm",
    "transfer_syntax/pydicom_MR_small_implicit.dcm",
)
LE_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
STORED_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
HOSTILE_NUMBERS = (0, 1, 2, 3, 7, 255, 4096, 32767, 65535)
HOSTILE_FRAMES = ("0", "-1", "2", "1000", "2147483647", "99999999999")
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.80",
    "1.2.3.4",
)


@dataclass(frozen=True)
class Mutation:
    index: int
    source: str
    kind: str
    data: bytes


def mutations(data_dir: Path, count: int, seed: int) -> Iterator[Mutation]:
    """``count`` hostile files, the same for the same seed."""
    sources = {name: pydicom.dcmread(data_dir / "dicom" / name) for name in SOURCES}
    for index in range(count):
        rng = random.Random(f"{seed}:{index}")
        name = rng.choice(SOURCES)
        ds = copy.deepcopy(sources[name])  # a shallow copy shares elements: edits would pile up
        _relabel(ds, seed, index)
        kind, data = rng.choice(MUTATORS)(rng, ds)
        yield Mutation(index, name, kind, data)


def _relabel(ds: Dataset, seed: int, index: int) -> None:
    label = ["openaim fuzz", str(seed), str(index)]
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[*label, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*label, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[*label, "instance"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = f"FUZZ-{seed}-{index}"


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _flip(rng: random.Random, ds: Dataset) -> tuple[str, bytes]:
    data = bytearray(_bytes(ds))
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(132, len(data))] = rng.randrange(256)
    return "byte flips", bytes(data)


def _flip_header(rng: random.Random, ds: Dataset) -> tuple[str, bytes]:
    data = bytearray(_bytes(ds))
    end = min(len(data), 2048)  # the file meta and the first attributes
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(132, end)] = rng.randrange(256)
    return "header byte flips", bytes(data)


def _truncate(rng: random.Random, ds: Dataset) -> tuple[str, bytes]:
    data = _bytes(ds)
    return "truncated", data[: rng.randrange(132, len(data))]


def _field(rng: random.Random, ds: Dataset) -> tuple[str, bytes]:
    keyword = rng.choice(
        (
            "Rows",
            "Columns",
            "BitsAllocated",
            "BitsStored",
            "SamplesPerPixel",
            "PixelRepresentation",
            "HighBit",
        )
    )
    value = rng.choice(HOSTILE_NUMBERS)
    setattr(ds, keyword, value)
    return f"{keyword}={value}", _bytes(ds)


def _frames(rng: random.Random, ds: Dataset) -> tuple[str, bytes]:
    value = rng.choice(HOSTILE_FRAMES)
    ds.NumberOfFrames = value
    return f"NumberOfFrames={value}", _bytes(ds)


def _photometric(rng: random.Random, ds: Dataset) -> tuple[str, bytes]:
    value = rng.choice(("RGB", "YBR_FULL_422", "PALETTE COLOR", "MONOCHROME1", "NONSENSE", ""))
    ds.PhotometricInterpretation = value
    return f"Photometric={value!r}", _bytes(ds)


def _syntax(rng: random.Random, ds: Dataset) -> tuple[str, bytes]:
    value = rng.choice(TRANSFER_SYNTAXES)
    data = bytearray(_bytes(ds))  # relabelled after writing: the bytes stay in the old syntax
    old = str(ds.file_meta.TransferSyntaxUID).encode()
    old_element = old + b"\x00" * (len(old) % 2)
    position = data.find(old_element, 132)
    new = value.encode()[: len(old_element)].ljust(len(old_element), b"\x00")
    data[position : position + len(old_element)] = new
    return f"TransferSyntax={value}", bytes(data)


def _remove(rng: random.Random, ds: Dataset) -> tuple[str, bytes]:
    keyword = rng.choice(("Rows", "Columns", "BitsAllocated", "PixelData", "PhotometricInterpretation"))
    if keyword in ds:
        delattr(ds, keyword)
    return f"no {keyword}", _bytes(ds)


def _nest(rng: random.Random, ds: Dataset) -> tuple[str, bytes]:
    depth = rng.choice((4, 15, 16, 17, 30, 50, 120))
    inner = Dataset()
    inner.TextValue = "deep"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    return f"nested {depth} deep", _bytes(ds)


def _frame_header(rng: random.Random, ds: Dataset) -> tuple[str, bytes]:
    """Byte flips in a compressed frame's first bytes (markers, segment table), the file kept well-formed."""
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        return _flip(rng, ds)
    count = int(ds.get("NumberOfFrames") or 1)
    frames = [bytearray(frame) for frame in generate_frames(ds.PixelData, number_of_frames=count)]
    frame = frames[0]
    for _ in range(rng.randint(1, 4)):
        frame[rng.randrange(0, min(len(frame), 200))] = rng.randrange(256)
    ds.PixelData = encapsulate([bytes(f) for f in frames])
    return "compressed frame header flips", _bytes(ds)


MUTATORS: tuple[Callable[[random.Random, Dataset], tuple[str, bytes]], ...] = (
    _flip,
    _flip_header,
    _truncate,
    _field,
    _field,
    _frames,
    _photometric,
    _syntax,
    _remove,
    _nest,
    _frame_header,
    _frame_header,
)


@dataclass
class Outcome:
    """What the platform answered to one file: its upload, and each viewer path when it was stored."""

    mutation: Mutation
    upload: int
    reason: str = ""
    answers: dict[str, int] = field(default_factory=dict)
    hangs: list[str] = field(default_factory=list)
    milliseconds: int = 0


def uids_of(data: bytes) -> tuple[str, str, str] | None:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    except Exception:
        return None


def exercise(client: httpx.Client, mutation: Mutation) -> Outcome:
    """Upload the file through STOW-RS; when it is stored, open it through every viewer path."""
    response = client.post(
        "/dicomweb/studies", content=mutation.data, headers={"Content-Type": "application/dicom"}
    )
    outcome = Outcome(mutation, response.status_code)
    if response.status_code != 200:
        try:
            outcome.reason = str(response.json().get("detail", ""))
        except ValueError:
            outcome.reason = response.text[:200]
        return outcome
    uids = uids_of(mutation.data)
    assert uids is not None, "the platform stored a file pydicom cannot read"
    study, series, instance = uids
    base = f"/studies/{study}/series/{series}"
    paths: list[tuple[str, str, dict[str, str]]] = [
        ("images (first)", f"/api{base}/images?first=true", {}),
        ("images", f"/api{base}/images", {}),
        ("frame as Explicit LE", f"/dicomweb{base}/instances/{instance}/frames/1", {"Accept": LE_ACCEPT}),
        ("frame as stored", f"/dicomweb{base}/instances/{instance}/frames/1", {"Accept": STORED_ACCEPT}),
        ("frame 2 as Explicit LE", f"/dicomweb{base}/instances/{instance}/frames/2", {"Accept": LE_ACCEPT}),
        ("series bulk data", f"/dicomweb{base}", {"Accept": LE_ACCEPT}),
        ("rendered", f"/dicomweb{base}/instances/{instance}/rendered", {"Accept": "image/png"}),
        ("thumbnail", f"/api{base}/instances/{instance}/thumbnail.png", {}),
        ("overlay planes", f"/api{base}/overlay-planes", {}),
        ("study page", f"/studies/{study}", {"Accept": "text/html"}),
    ]
    for name, path, headers in paths:
        try:
            answer = client.get(path, headers=headers)
            _ = answer.content
            outcome.answers[name] = answer.status_code
        except httpx.TimeoutException:
            outcome.hangs.append(name)
    return outcome


def orthanc_is_up(url: str, auth: tuple[str, str]) -> bool:
    try:
        return httpx.get(f"{url}/system", auth=auth, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def sign_in(client: httpx.Client, username: str, password: str) -> None:
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/signin").text)
    assert token is not None
    response = client.post(
        "/signin", data={"username": username, "password": password, "csrf_token": token.group(1)}
    )
    assert response.status_code == 303, "sign-in failed"
    page = client.get("/worklist", headers={"Accept": "text/html"})
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    client.headers["X-CSRF-Token"] = found.group(1)


def timed_run(client: httpx.Client, files: Iterator[Mutation], alive: Callable[[], bool]) -> list[Outcome]:
    """Every file exercised in turn; stops at the first that leaves Orthanc dead (and says which)."""
    outcomes = []
    for mutation in files:
        started = time.monotonic()
        outcome = exercise(client, mutation)
        outcome.milliseconds = int((time.monotonic() - started) * 1000)
        outcomes.append(outcome)
        if not alive():  # after every file: a refused upload reached Orthanc too, in the old code
            outcome.hangs.append("ORTHANC DIED")
            break
    return outcomes
