"""De-identified teaching and development case packs: a ZIP of DICOM files made safe to leave the
hospital, following DICOM PS3.15 Annex E.

What the pack applies, and what it does not:
- the Basic Application Level Confidentiality Profile (DCM 113100);
- the Retain Longitudinal Temporal Information with Modified Dates Option (DCM 113107): every date and
  date-time of the pack moves back by one whole number of days (62 to 730, drawn from the pack's
  secret), so the intervals between a patient's studies stay true and times of day are kept;
- the Clean Structured Content Option (DCM 113104): SR and SEG content is kept (it is the teaching
  material) with its names, UIDs and dates handled as everywhere else and its free-text items blanked;
- not the Clean Descriptors Option: descriptions and comments are removed, as the basic profile says,
  because cleaning free text needs a person;
- private attributes, overlays and curves removed; every UID (except well-known ones: SOP classes,
  transfer syntaxes, coding schemes) remapped the same way throughout the pack, in sequences and the file
  meta too, so an SR or SEG still references its images inside the pack;
- instances that say their pixels carry burned-in annotation are left out and listed as such; pixels are
  never checked, so an instance that does not say so is flagged for a person to look at.

Library: dicognito (MIT, maintained, requires pydicom 3). It was chosen over pydicom/deid, whose default
recipe is not the Annex E table and needs a recipe written for every rule, and over dicom-anonymizer,
which applies its actions to top-level attributes only (a UID nested in a SEG's Referenced Series
Sequence keeps its original value) and replaces dates with 00010101 instead of shifting them. dicognito
walks every element of the dataset and its file meta, derives each new UID and identifier from a seed
(so one seed gives one consistent mapping across a pack) and shifts dates by one offset per instance of
its ``Anonymizer``. It keeps free text the basic profile removes: ``viewer.case_packs.annex_e`` adds those
rules.
"""

from __future__ import annotations

import copy
import hmac
import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import dicognito
from dicognito.anonymizer import Anonymizer
from dicognito.datetimeanonymizer import DateTimeAnonymizer
from dicognito.element_anonymizer import ElementAnonymizer
from pydicom import DataElement, Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID_dictionary

from openaim.seed import DEMO_MANUFACTURER
from viewer.case_packs.annex_e import EMPTY, REMOVE, REPLACE, UNNAMED_REMOVE

MIN_SHIFT_DAYS = 62
MAX_SHIFT_DAYS = 730
DUMMY_TEXT = "ANONYMIZED"
METHOD = (
    "PS3.15 E basic, modified dates, clean structured content",
    f"dicognito {dicognito.__version__} + openaim Annex E table",
)
OPTIONS = (
    codes.DCM.BasicApplicationConfidentialityProfile,
    codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption,
    codes.DCM.CleanStructuredContentOption,
)


class CasePackError(ValueError):
    """Nothing could go into the pack (every instance was left out, or none was given)."""


@dataclass(frozen=True)
class PackEntry:
    """One manifest row: where a file is and what was done, with nothing that identifies anyone."""

    case: str
    study: int
    modality: str
    file: str | None
    status: str
    notes: list[str] = field(default_factory=list)


def shift_days(secret: str) -> int:
    """The pack's whole-day date shift, drawn from its secret (which never leaves the server)."""
    digest = hmac.digest(secret.encode(), b"case-pack-date-shift", "sha256")
    return MIN_SHIFT_DAYS + int.from_bytes(digest[:8], "big") % (MAX_SHIFT_DAYS - MIN_SHIFT_DAYS + 1)


class _AnnexETable(ElementAnonymizer):
    """The basic profile's rules for what dicognito would keep or fake; runs before dicognito's own."""

    def __call__(self, dataset: Dataset, data_element: DataElement) -> bool:
        tag, keyword = data_element.tag, data_element.keyword
        if keyword in REMOVE or tag in UNNAMED_REMOVE or _overlay_or_curve(tag.group, tag.element):
            del dataset[tag]
        elif keyword in EMPTY:
            data_element.value = [] if data_element.VR == "SQ" else None
        elif keyword in REPLACE and data_element.value:
            data_element.value = DUMMY_TEXT
        elif data_element.VR == "UI" and _well_known(data_element.value):
            pass  # a SOP class, transfer syntax or coding scheme names no one: keep it
        elif keyword == "TextValue":
            data_element.value = DUMMY_TEXT  # free text in SR content cannot be checked automatically
        else:
            return False
        return True

    def describe_actions(self) -> Iterator[str]:
        yield "Remove, empty or replace the free-text attributes of PS3.15 Table E.1-1"


def _overlay_or_curve(group: int, element: int) -> bool:
    """Curve data (50xx) and overlay pixels and comments (60xx,3000 / 60xx,4000) may carry names."""
    return (group & 0xFF00) == 0x5000 or ((group & 0xFF00) == 0x6000 and element in (0x3000, 0x4000))


def _well_known(value: object) -> bool:
    values = value if isinstance(value, list | tuple) else [value]
    return bool(values) and all(str(uid) in UID_dictionary for uid in values)


def _anonymizer(secret: str) -> Anonymizer:
    anonymizer = Anonymizer(seed=secret)
    anonymizer.add_element_handler(DateTimeAnonymizer(-24 * shift_days(secret)))
    anonymizer.add_element_handler(_AnnexETable())  # first: it decides before dicognito fakes a value
    return anonymizer


def _mark_deidentified(dataset: Dataset, case: str) -> None:
    dataset.PatientName = case
    dataset.PatientID = case
    dataset.PatientIdentityRemoved = "YES"
    dataset.LongitudinalTemporalInformationModified = "MODIFIED"
    dataset.DeidentificationMethod = list(METHOD)
    items = []
    for code in OPTIONS:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, "DCM", code.meaning
        items.append(item)
    dataset.DeidentificationMethodCodeSequence = items


def deidentify(dataset: Dataset, anonymizer: Anonymizer, case: str) -> Dataset:
    """A de-identified copy; the caller's dataset is left as it was."""
    result = copy.deepcopy(dataset)
    if not hasattr(result, "file_meta"):
        result.file_meta = FileMetaDataset()
    result.remove_private_tags()  # walks sequences too
    result.file_meta.pop("SourceApplicationEntityTitle", None)
    anonymizer.anonymize(result)
    _mark_deidentified(result, case)
    return result


def _case_numbers(datasets: list[Dataset]) -> tuple[dict[str, str], dict[str, int]]:
    """Case labels per patient (first seen, first numbered) and study numbers in date order per case."""
    cases: dict[str, str] = {}
    for dataset in datasets:
        cases.setdefault(str(dataset.get("PatientID", "")), f"CASE{len(cases) + 1:03d}")
    studies: dict[str, int] = {}
    by_date = sorted(datasets, key=lambda d: (str(d.get("StudyDate", "")), str(d.get("StudyTime", ""))))
    counts: dict[str, int] = {}
    for dataset in by_date:
        study = str(dataset.StudyInstanceUID)
        if study not in studies:
            case = cases[str(dataset.get("PatientID", ""))]
            counts[case] = counts.get(case, 0) + 1
            studies[study] = counts[case]
    return cases, studies


def _encode(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def build_case_pack(datasets: Iterable[Dataset], secret: str, attribution: str | None = None) -> bytes:
    """A ZIP of de-identified DICOM files with manifest.json and README.txt.

    ``secret`` seeds the UID, identifier and date mapping: the same secret maps the same way, so a pack
    made with a fresh random secret cannot be linked to another pack or back to the archive.
    """
    given = list(datasets)
    if not given:
        raise CasePackError("no instance was given")
    anonymizer = _anonymizer(secret)
    cases, studies = _case_numbers(given)
    entries: list[PackEntry] = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for dataset in given:
            entry = _pack_one(dataset, anonymizer, cases, studies, len(entries) + 1, archive)
            entries.append(entry)
        if not any(entry.file for entry in entries):
            raise CasePackError("every instance was left out (burned-in annotation)")
        archive.writestr("manifest.json", _manifest(entries))
        archive.writestr("README.txt", _readme(attribution))
    return buffer.getvalue()


def _pack_one(
    dataset: Dataset,
    anonymizer: Anonymizer,
    cases: dict[str, str],
    studies: dict[str, int],
    number: int,
    archive: zipfile.ZipFile,
) -> PackEntry:
    case = cases[str(dataset.get("PatientID", ""))]
    study = studies[str(dataset.StudyInstanceUID)]
    modality = str(dataset.get("Modality", ""))
    burned_in = str(dataset.get("BurnedInAnnotation", "")).upper()
    if burned_in == "YES":
        return PackEntry(case, study, modality, None, "left out", ["BurnedInAnnotation is YES"])
    notes = [] if burned_in == "NO" else ["BurnedInAnnotation not stated: look at the pixels before use"]
    name = f"{case}/study-{study}/{modality or 'OT'}-{number:04d}.dcm"
    archive.writestr(name, _encode(deidentify(dataset, anonymizer, case)))
    return PackEntry(case, study, modality, name, "de-identified", notes)


def _manifest(entries: list[PackEntry]) -> str:
    return json.dumps(
        {
            "method": list(METHOD),
            "options": [f"{code.scheme_designator} {code.value} {code.meaning}" for code in OPTIONS],
            "dates": "shifted back by one whole number of days, the same for the whole pack (not disclosed)",
            "instances": [asdict(entry) for entry in entries],
        },
        indent=2,
    )


def _readme(attribution: str | None) -> str:
    lines = [
        "De-identified case pack made by openaim.",
        "",
        "Every DICOM file was de-identified following DICOM PS3.15 Annex E: the Basic Application Level",
        "Confidentiality Profile with the Retain Longitudinal Temporal Information with Modified Dates and",
        "the Clean Structured Content options. Private attributes, overlays, descriptions and comments were",
        "removed; UIDs were replaced consistently inside the pack; all dates moved by the same days.",
        "",
        "Pixels were not examined. Instances flagged in manifest.json may carry burned-in text: check them",
        "before sharing the pack further.",
    ]
    if attribution:
        lines += ["", "Source data and attribution:", attribution]
    return "\n".join(lines) + "\n"


DEMO_ATTRIBUTION = (
    'Demo chest radiographs: NIH Clinical Center, ChestX-ray14; Wang X. et al., "ChestX-ray8:\n'
    'Hospital-scale Chest X-ray Database and Benchmarks", CVPR 2017 (images as redistributed by\n'
    "jrzech/reproduce-chexnet, BSD-3-Clause)."
)


def attribution_for(datasets: Iterable[Dataset]) -> str | None:
    """The attribution the demo data asks for, when the pack holds any of it (see openaim.seed)."""
    if any(dataset.get("Manufacturer") == DEMO_MANUFACTURER for dataset in datasets):
        return DEMO_ATTRIBUTION
    return None
