"""AI results from other vendors, found in the archive as DICOM SEG or TID 1500 SR, in the shared view shape.

This platform's own results are read from the database (and skipped here by their Device UID). Every
other SEG or SR of the study is shown whatever state it is in: a finding whose image is not in the archive
keeps its place with a note, and an object that cannot be read is listed with the reason, never raised.
Which algorithm made it is read as IHE AIR asks (Contributing Equipment Sequence), falling back to the
object's General Equipment and, for SR, the device observer (TID 1004); what is absent reads "unknown".

Parsed instances are kept in a small per-process LRU cache: SOP instances never change, and every mask
PNG that the viewport asks for would otherwise download the whole SEG again.
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from functools import partial

import pydicom
from pydicom import Dataset
from pydicom.multival import MultiValue

from viewer.ai_results.algorithm_names import is_address, link, pinned_version, repository_name
from viewer.ai_results.foreign_images import PresentImages
from viewer.ai_results.foreign_seg import SEGMENTATION_STORAGE, mask_png, seg_findings
from viewer.ai_results.foreign_sr import SR_CLASSES, UnsupportedObjectError, sr_content
from viewer.ai_results.view import AlgorithmInfo, FindingView, ResultView
from viewer.archive.client import Archive

__all__ = [
    "cached_instance",
    "foreign_result",
    "load_foreign_results",
    "mask_png",
    "mask_url",
    "peek_instance",
]

RESULT_CLASSES = frozenset({SEGMENTATION_STORAGE, *SR_CLASSES})
UNKNOWN = "unknown"
CACHE_BYTES = 256 * 1024 * 1024  # parsed SEG/SR kept per process, by the size of their files
PARALLEL_RETRIEVES = 4
RESULT_MODALITIES = frozenset({"SR", "SEG"})
SMALL_SERIES = 16  # instances: a series this small is scanned for results whatever its modality
# TID 1004 device observer concepts (DCM): UID, name, manufacturer, model name
DEVICE_UID, DEVICE_NAME, DEVICE_MANUFACTURER, DEVICE_MODEL = "121012", "121013", "121014", "121015"


def foreign_result(dataset: Dataset, images: Mapping[str, int], mask_url: Callable[[int], str]) -> ResultView:
    """One SEG or SR instance as a ResultView; ``images`` are the study's images present in the archive
    (SOP Instance UID -> number of frames). Never raises: what cannot be read becomes a problem line."""
    sop_uid = str(dataset.get("SOPInstanceUID", ""))
    result_id = f"foreign-{sop_uid}"
    present = PresentImages(images)
    findings: list[FindingView] = []
    problems: list[str] = []
    triage = None
    kind = "SEG" if str(dataset.get("SOPClassUID", "")) == SEGMENTATION_STORAGE else "SR"
    try:
        if kind == "SEG":
            findings = seg_findings(dataset, result_id, present, mask_url)
        else:
            content = sr_content(dataset, result_id, present)
            findings, triage, problems = content.findings, content.triage, content.problems
            kind = "TID 1500 SR"
    except UnsupportedObjectError as error:
        problems = [f"not shown: {error}"]
    except Exception as error:  # hostile or broken objects must not break the study page
        problems = [f"not shown: the {kind} could not be read ({error.__class__.__name__})"]
    return ResultView(
        id=result_id,
        source="foreign",
        algorithm=algorithm_info(dataset),
        series_uid=_series_about(dataset),
        object_uid=sop_uid,
        kind=kind,
        triage=triage,
        created=_created(dataset),
        findings=tuple(findings),
        problems=tuple(problems),
        missing_images=present.missing,
    )


def algorithm_info(dataset: Dataset) -> AlgorithmInfo:
    """The algorithm as IHE AIR names it; unknown parts say so rather than guess. A repository address
    where a name or version belongs becomes the repository's name, with the address as ``home_url``."""
    equipment = _algorithm_equipment(dataset)
    observer = _device_observer(dataset)
    segment_algorithm = _segment_algorithm(dataset)
    names = (
        equipment.get("ManufacturerModelName"),
        dataset.get("ManufacturerModelName"),
        observer.get(DEVICE_MODEL),
        observer.get(DEVICE_NAME),
        segment_algorithm.get("AlgorithmName"),
    )
    versions = (
        equipment.get("SoftwareVersions"),
        dataset.get("SoftwareVersions"),
        segment_algorithm.get("AlgorithmVersion"),
    )
    return AlgorithmInfo(
        name=_first(*names, address_as=repository_name),
        version=_first(*versions, address_as=pinned_version),
        vendor=_first(
            equipment.get("Manufacturer"), dataset.get("Manufacturer"), observer.get(DEVICE_MANUFACTURER)
        ),
        device_uid=str(equipment.get("DeviceUID") or observer.get(DEVICE_UID) or "") or None,
        regulatory_status=None,
        home_url=_home_url(*names, *versions),
    )


def _items(value: object) -> list[str]:
    """A value's non-empty texts: each of a multi-valued attribute, or the one."""
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [text for text in (str(v).strip() for v in values if v is not None) if text]


def _home_url(*values: object) -> str | None:
    """The first repository address among the values that may be a link (http(s) only)."""
    links = (link(text) for value in values for text in _items(value) if is_address(text))
    return next((url for url in links if url), None)


def _first(*values: object, address_as: Callable[[str], str] = str) -> str:
    """The first value that says something, its items joined by "/"; an address item is read through
    ``address_as`` (its repository name, or the version it pins: "" drops it)."""
    for value in values:
        texts = [address_as(text) if is_address(text) else text for text in _items(value)]
        text = "/".join(text for text in texts if text)
        if text:
            return text
    return UNKNOWN


def _algorithm_equipment(dataset: Dataset) -> Dataset:
    """The Contributing Equipment item that names a device (the algorithm); others (the scanner that made
    the source images, the toolkit that wrote the file) are not the algorithm."""
    for item in dataset.get("ContributingEquipmentSequence") or []:
        if item.get("DeviceUID"):
            return item
    return Dataset()


def device_uids(dataset: Dataset) -> set[str]:
    return {
        str(item.DeviceUID)
        for item in dataset.get("ContributingEquipmentSequence") or []
        if item.get("DeviceUID")
    }


def _device_observer(dataset: Dataset) -> dict[str, str]:
    """TID 1004 items at the document's top level (SR only), by concept code value."""
    found = {}
    for item in dataset.get("ContentSequence") or []:
        if item.get("RelationshipType") != "HAS OBS CONTEXT" or not item.get("ConceptNameCodeSequence"):
            continue
        code = item.ConceptNameCodeSequence[0]
        if code.get("CodingSchemeDesignator") == "DCM":
            found[str(code.get("CodeValue"))] = str(item.get("UID") or item.get("TextValue") or "")
    return found


def _segment_algorithm(dataset: Dataset) -> dict[str, str]:
    """A SEG's per-segment algorithm (name, version), from the first segment that names one."""
    for segment in dataset.get("SegmentSequence") or []:
        for item in segment.get("SegmentationAlgorithmIdentificationSequence") or []:
            return {
                "AlgorithmName": item.get("AlgorithmName"),
                "AlgorithmVersion": item.get("AlgorithmVersion"),
            }
        if segment.get("SegmentAlgorithmName"):
            return {"AlgorithmName": segment.SegmentAlgorithmName}
    return {}


def _series_about(dataset: Dataset) -> str:
    """The series of the images the result is about (the first referenced), else the object's own."""
    for keyword in (
        "ReferencedSeriesSequence",
        "CurrentRequestedProcedureEvidenceSequence",
        "PertinentOtherEvidenceSequence",
    ):
        for item in dataset.get(keyword) or []:
            if item.get("SeriesInstanceUID"):
                return str(item.SeriesInstanceUID)
            for series in item.get("ReferencedSeriesSequence") or []:
                return str(series.SeriesInstanceUID)
    return str(dataset.get("SeriesInstanceUID", ""))


def _created(dataset: Dataset) -> str | None:
    date = str(dataset.get("ContentDate") or "")
    time = str(dataset.get("ContentTime") or "").split(".")[0].ljust(6, "0")
    if len(date) != 8 or not date.isdigit() or not time[:6].isdigit():
        return None
    return f"{date[:4]}-{date[4:6]}-{date[6:]}T{time[:2]}:{time[2:4]}:{time[4:6]}"


class _InstanceCache:
    """Parsed instances by (study, series, SOP instance) UID, least recently used dropped first."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str, str], tuple[Dataset, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, str, str]) -> Dataset | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: tuple[str, str, str], dataset: Dataset, size: int) -> None:
        if key in self._entries or size > self._max_bytes:
            return
        self._entries[key] = (dataset, size)
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped


_cache = _InstanceCache(CACHE_BYTES)


def peek_instance(study_uid: str, series_uid: str, sop_uid: str) -> Dataset | None:
    """The parsed instance if this process already holds it (no request to the archive)."""
    return _cache.get((study_uid, series_uid, sop_uid))


async def cached_instance(archive: Archive, study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
    """One instance, parsed, from the cache or the archive (ArchiveError; pydicom's errors if unreadable)."""
    key = (study_uid, series_uid, sop_uid)
    dataset = _cache.get(key)
    if dataset is None:
        data = await archive.retrieve_instance(study_uid, series_uid, sop_uid)
        dataset = await asyncio.to_thread(pydicom.dcmread, io.BytesIO(data))
        _cache.put(key, dataset, len(data))
    return dataset


def mask_url(study_uid: str, series_uid: str, sop_uid: str, seg_frame: int) -> str:
    """The mask route's address for one SEG frame (viewer/ai_results/foreign_masks.py)."""
    return f"/api/studies/{study_uid}/foreign/{series_uid}/{sop_uid}/masks/{seg_frame}.png"


async def load_foreign_results(
    archive: Archive, study_uid: str, ignore_device_uids: Collection[str]
) -> list[ResultView]:
    """Every SEG and SR of the study not made by this platform (``ignore_device_uids``), read against the
    images of the study that the archive holds."""
    series_list, indexed = await asyncio.gather(
        archive.search_series(study_uid), archive.indexed_instances(study_uid)
    )
    # SOP classes come only from QIDO-RS, which reads every file: ask it only about series that may hold
    # results. The index (no file read) gives every image and its frame count.
    series_uids = [str(series.SeriesInstanceUID) for series in series_list if _may_hold_results(series)]
    listings = await asyncio.gather(*(archive.search_instances(study_uid, uid) for uid in series_uids))
    images = {instance.instance_uid: instance.frames for instance in indexed}
    objects: list[tuple[str, str]] = []
    for series_uid, instances in zip(series_uids, listings, strict=True):
        for instance in instances:
            if str(instance.get("SOPClassUID", "")) in RESULT_CLASSES:
                sop_uid = str(instance.get("SOPInstanceUID", ""))
                objects.append((series_uid, sop_uid))
                images.pop(sop_uid, None)
    gate = asyncio.Semaphore(PARALLEL_RETRIEVES)

    async def one(series_uid: str, sop_uid: str) -> ResultView | None:
        async with gate:
            return await _one_result(archive, study_uid, series_uid, sop_uid, images, ignore_device_uids)

    views = await asyncio.gather(*(one(series_uid, sop_uid) for series_uid, sop_uid in objects))
    return sorted(
        (view for view in views if view is not None), key=lambda view: (view.created or "", view.id)
    )


def _may_hold_results(series: Dataset) -> bool:
    """SR and SEG series, and small series of any modality: some writers put a result in the series of
    its images (highdicom's test SR shares its CT's series). A large image series is never scanned."""
    if str(series.get("Modality", "")) in RESULT_MODALITIES:
        return True
    try:
        return int(series.get("NumberOfSeriesRelatedInstances") or 0) <= SMALL_SERIES
    except (TypeError, ValueError):
        return True


async def _one_result(
    archive: Archive,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    images: Mapping[str, int],
    ignore_device_uids: Collection[str],
) -> ResultView | None:
    try:
        dataset = await cached_instance(archive, study_uid, series_uid, sop_uid)
    except Exception as error:  # an unreachable instance or hostile bytes: listed, never raised
        return _unreadable(series_uid, sop_uid, error)
    if device_uids(dataset) & set(ignore_device_uids):
        return None
    urls = partial(mask_url, study_uid, series_uid, sop_uid)
    return await asyncio.to_thread(foreign_result, dataset, images, urls)


def _unreadable(series_uid: str, sop_uid: str, error: Exception) -> ResultView:
    return ResultView(
        id=f"foreign-{sop_uid}",
        source="foreign",
        algorithm=AlgorithmInfo(name=UNKNOWN, version=UNKNOWN, vendor=UNKNOWN),
        series_uid=series_uid,
        object_uid=sop_uid,
        kind="SEG or SR",
        problems=(f"not shown: the archive did not give a readable object ({error.__class__.__name__})",),
    )
