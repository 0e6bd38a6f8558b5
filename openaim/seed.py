"""Demo seeding: the NIH chest X-rays as demo DX studies, and the real DICOM fixtures, into Orthanc.

A fresh platform has an empty archive, so there is nothing to read, triage or review. Seeding fills
it with real images: each ChestX-ray14 PNG becomes a Digital X-Ray (For Presentation) chest PA
instance with a generated, clearly marked demo identity, and every fixture under ``dicom/`` is sent
byte for byte (SEG and SR included, so foreign AI results have their referenced images beside them).

Everything is deterministic, from UIDs to generated names, so that a second run finds every
instance already in Orthanc and adds nothing. Patient names and IDs are never logged or printed:
they are fake here, but the same code paths must stay safe when pointed at a real archive.

The generated sex and age are random, not the NIH patient's: per-subgroup statistics on demo data
mean nothing.

What seeding needs of the archive is ``SeedArchive``; Orthanc's is ``orthanc.seeding.OrthancSeedArchive``,
handed in by the ``openaim`` command, so that this bottom layer knows no archive.
"""

from __future__ import annotations

import io
import logging
import random
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from openaim.uids import is_uid

log = logging.getLogger(__name__)

DIGITAL_XRAY_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
DEMO_INSTITUTION = "openaim DEMO DATA"
DEMO_MANUFACTURER = "openaim demo"
NIH_SOURCE = "NIH ChestX-ray14"
BATCH_SIZE = 16
# The published 1024x1024 NIH images come from ~3000-pixel detectors at ~0.139-0.143 mm per pixel,
# downsampled; 0.143 mm at 1024 pixels is the conventional figure. Scaled for other sizes.
FULL_SIZE_PIXEL_SPACING_MM = 0.143
FULL_SIZE_PIXELS = 1024
DEMO_PERIOD_DAYS = 28

_SOURCE_NAME = re.compile(re.escape(NIH_SOURCE) + r" image (\S+\.png)")

_FAMILY_NAMES = (
    "Smith", "Garcia", "Nguyen", "Okafor", "Kowalski", "Rossi", "Haddad", "Tanaka", "Murphy",
    "Schmidt", "Silva", "Patel", "Johansson", "Dubois", "Kim", "Mensah", "Novak", "Cohen",
)  # fmt: skip
_GIVEN_NAMES = {
    "F": ("Anna", "Maria", "Aisha", "Mei", "Sofia", "Grace", "Fatima", "Elena", "Yuki", "Chloe"),
    "M": ("James", "Luis", "Minh", "Chidi", "Piotr", "Marco", "Omar", "Kenji", "Sean", "Lukas"),
}


class DemoUids(NamedTuple):
    study: str
    series: str
    instance: str


def demo_uids(image_name: str) -> DemoUids:
    """UIDs that depend only on the NIH file name, so that re-seeding yields the same instances."""

    def uid(level: str) -> str:
        return generate_uid(entropy_srcs=["openaim demo", NIH_SOURCE, image_name, level])

    return DemoUids(uid("study"), uid("series"), uid("instance"))


def source_image_name(dataset: Dataset) -> str | None:
    """The NIH file name a demo instance was made from: the key into ``cxr14/labels.csv``."""
    match = _SOURCE_NAME.search(str(dataset.get("DerivationDescription", "")))
    return match.group(1) if match else None


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _read_greyscale(png_path: Path) -> np.ndarray:
    """8-bit greyscale pixels; one published NIH image is RGBA with equal RGB and opaque alpha."""
    with Image.open(png_path) as image:
        greyscale = image if image.mode == "L" else image.convert("L")
        return np.asarray(greyscale, dtype=np.uint8)


def cxr_to_dicom(png_path: Path, *, reference_date: date | None = None) -> Dataset:
    """A DX For Presentation chest PA instance with the PNG's pixels and a generated demo identity.

    The identity is seeded by the NIH patient number and the study by the file name, not by the
    image's position in a listing, so the result does not depend on which other images are seeded.
    Study dates fall within the ``DEMO_PERIOD_DAYS`` before ``reference_date`` (default: today) so
    that the worklist looks current; everything else is fixed.
    """
    pixels = _read_greyscale(png_path)
    rows, columns = pixels.shape
    name = png_path.name
    nih_patient = name.split("_", 1)[0]
    person = random.Random(f"patient:{nih_patient}")  # noqa: S311 - fake data, not secrets
    visit = random.Random(f"study:{name}")  # noqa: S311
    uids = demo_uids(name)

    sex = person.choice(("F", "M"))
    age = person.randint(18, 90)
    study_day = (reference_date or date.today()) - timedelta(days=visit.randrange(DEMO_PERIOD_DAYS))
    birth_date = study_day - timedelta(days=age * 365 + person.randrange(365))
    study_time = f"{visit.randint(7, 19):02d}{visit.randrange(60):02d}{visit.randrange(60):02d}"
    spacing = FULL_SIZE_PIXEL_SPACING_MM * FULL_SIZE_PIXELS / columns
    demo_note = (
        f"Demo data generated by openaim from {NIH_SOURCE} image {name}; not a real patient. "
        "Name, IDs, sex, age and dates are generated."
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DIGITAL_XRAY_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = UID(uids.instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = DIGITAL_XRAY_FOR_PRESENTATION
    ds.SOPInstanceUID = uids.instance
    ds.ImageType = ["DERIVED", "PRIMARY"]
    # Patient: fake identity, marked as such in the name, the ID, the issuer and the comments.
    ds.PatientName = f"DEMO^{person.choice(_FAMILY_NAMES)}^{person.choice(_GIVEN_NAMES[sex])}"
    ds.PatientID = f"DEMO-{int(nih_patient):06d}"
    ds.IssuerOfPatientID = "OPENAIM-DEMO"
    ds.PatientBirthDate = birth_date.strftime("%Y%m%d")
    ds.PatientSex = sex
    ds.PatientAge = f"{age:03d}Y"
    ds.PatientComments = demo_note
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"{NIH_SOURCE}, de-identified by NIH; demo identity generated"
    # Study and series: one of each per image.
    ds.StudyInstanceUID = uids.study
    ds.SeriesInstanceUID = uids.series
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_day.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study_time
    ds.StudyID = f"D{visit.randrange(10**6):06d}"
    ds.AccessionNumber = f"DEMO{visit.randrange(10**8):08d}"
    ds.ReferringPhysicianName = (
        f"DEMO^{visit.choice(_FAMILY_NAMES)}^{visit.choice(_GIVEN_NAMES[visit.choice('FM')])}"
    )
    ds.StudyDescription = "DEMO DATA - CHEST PA"
    ds.SeriesDescription = "DEMO CHEST PA"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ViewCodeSequence = Sequence([_code("399348003", "SCT", "postero-anterior")])
    ds.AnatomicRegionSequence = Sequence([_code("51185008", "SCT", "Chest")])
    ds.ImageLaterality = "B"
    # PA chest shown as if facing the patient: columns run to the patient's left, rows to the feet.
    ds.PatientOrientation = ["L", "F"]
    ds.AcquisitionContextSequence = Sequence()
    # Equipment and provenance: the NIH file name stays findable (see source_image_name).
    ds.Manufacturer = DEMO_MANUFACTURER
    ds.ManufacturerModelName = "ChestX-ray14 PNG conversion"
    ds.InstitutionName = DEMO_INSTITUTION
    ds.DetectorType = ""
    ds.DerivationDescription = f"Converted from {NIH_SOURCE} image {name} (8-bit PNG)"
    ds.ImageComments = demo_note
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    # Image pixel and DX image modules: the PNG's 8-bit values, unchanged.
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter = 128
    ds.WindowWidth = 256
    ds.ImagerPixelSpacing = [round(spacing, 6), round(spacing, 6)]
    ds.PixelData = pixels.tobytes()
    return ds


def encode(dataset: Dataset) -> bytes:
    """A DICOM Part 10 file as bytes: what STOW-RS carries."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


@dataclass
class SeedReport:
    """What one seeding run did; ``failed`` maps a data file (relative path) to the reason."""

    added: int = 0
    already_present: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.added + self.already_present + len(self.failed)

    def summary(self) -> str:
        """One line for the console, then one per failure: shared-data file names, no patient data."""
        line = f"{self.added} added, {self.already_present} already present, {len(self.failed)} failed"
        return "\n".join([line, *(f"  {label}: {why}" for label, why in sorted(self.failed.items()))])


Progress = Callable[[int, int, str], None]


@dataclass
class Stored:
    """What an archive did with the files it was given, by SOP Instance UID; ``failed`` says why."""

    added: set[str] = field(default_factory=set)
    already_present: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)


class SeedArchive(Protocol):
    """What seeding asks of an archive."""

    def present(self, sop_instance_uids: list[str]) -> set[str]:
        """Which of these SOP Instance UIDs the archive holds already (one query for them all)."""
        ...

    def store(self, files: Mapping[str, bytes]) -> Stored:
        """Store DICOM Part 10 files (SOP Instance UID -> bytes), byte for byte."""
        ...


@dataclass(frozen=True)
class _Item:
    label: str
    sop_instance_uid: str
    load: Callable[[], bytes]


def _encoded_cxr(png_path: Path, reference_date: date | None) -> bytes:
    return encode(cxr_to_dicom(png_path, reference_date=reference_date))


def _cxr_items(data_dir: Path, limit: int | None, reference_date: date | None) -> list[_Item]:
    root = data_dir / "cxr14"
    paths = sorted(
        (p for sub in ("full", "small") for p in (root / sub).glob("*.png")),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if limit is not None:
        paths = paths[:limit]
    return [
        _Item(
            label=path.relative_to(data_dir).as_posix(),
            sop_instance_uid=demo_uids(path.name).instance,
            load=partial(_encoded_cxr, path, reference_date),
        )
        for path in paths
    ]


def _fixture_items(data_dir: Path, report: SeedReport) -> list[_Item]:
    items = []
    for path in sorted((data_dir / "dicom").rglob("*.dcm")):
        label = path.relative_to(data_dir).as_posix()
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            uid = str(header.get("SOPInstanceUID", ""))
        except Exception as error:  # any unreadable file is reported, never fatal
            report.failed[label] = f"not readable as DICOM: {error}"
            continue
        if not is_uid(uid):
            report.failed[label] = "missing or malformed SOPInstanceUID"
            continue
        items.append(_Item(label=label, sop_instance_uid=uid, load=path.read_bytes))
    return items


def _batches(items: Iterable[_Item], size: int) -> Iterator[list[_Item]]:
    """Batches without a repeated UID, so that a duplicate is looked up after its twin is stored."""
    batch: list[_Item] = []
    uids: set[str] = set()
    for item in items:
        if len(batch) == size or item.sop_instance_uid in uids:
            yield batch
            batch, uids = [], set()
        batch.append(item)
        uids.add(item.sop_instance_uid)
    if batch:
        yield batch


def _seed_batch(archive: SeedArchive, batch: list[_Item], report: SeedReport) -> None:
    present = archive.present([item.sop_instance_uid for item in batch])
    files: dict[str, bytes] = {}
    labels: dict[str, str] = {}
    for item in batch:
        if item.sop_instance_uid in present:
            report.already_present += 1
            continue
        try:
            files[item.sop_instance_uid] = item.load()
        except Exception as error:  # a broken source file is reported, never fatal
            report.failed[item.label] = f"could not be converted: {error}"
            continue
        labels[item.sop_instance_uid] = item.label
    if not files:
        return
    stored = archive.store(files)
    report.added += len(stored.added)
    report.already_present += len(stored.already_present)
    for uid, reason in stored.failed.items():
        report.failed[labels[uid]] = reason
        log.warning("seeding %s failed: %s", labels[uid], reason)


def seed(
    archive: SeedArchive,
    data_dir: Path,
    *,
    limit: int | None = None,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
    reference_date: date | None = None,
) -> SeedReport:
    """Load the demo chest X-rays (the first ``limit`` of them) and every fixture into the archive.

    Instances the archive already holds are skipped, so a second run adds nothing; files that share a
    SOP Instance UID (the same image in several transfer syntaxes) count as already present. A file
    that cannot be read or stored is reported in ``failed`` and the rest carry on. ``progress`` is
    called after each batch with (done, total, last file name).
    """
    report = SeedReport()
    items = _cxr_items(data_dir, limit, reference_date) + _fixture_items(data_dir, report)
    # Files already refused while listing count as done, so that ``done`` ends at ``total``.
    done = len(report.failed)
    total = done + len(items)
    for batch in _batches(items, batch_size):
        _seed_batch(archive, batch, report)
        done += len(batch)
        if progress is not None:
            progress(done, total, batch[-1].label)
    log.info(
        "seeding done: %d added, %d already present, %d failed",
        report.added,
        report.already_present,
        len(report.failed),
    )
    return report


def print_progress(done: int, total: int, message: str) -> None:
    """Console progress on one line: counts and the shared data file name, never patient data."""
    end = "\n" if done >= total else ""
    print(f"\rseeding {done}/{total} {message[-60:]:<60}", end=end, file=sys.stderr, flush=True)
