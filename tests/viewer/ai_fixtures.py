"""Models and their results put in the real database the way the inference service leaves them, for the
reading-room tests: installed through the catalog, jobs through the job queue, result rows as stored."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import generate_uid
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from inference import catalog, jobs
from inference.catalog import Mode, ModelVersion, catalog_transaction
from inference.jobs import Job, JobState
from inference.results import Finding, InferenceResult
from openaim.db import transaction
from openaim.settings import Settings
from orthanc import OrthancConnection
from tests.inference.tiny_model import MODULE, write_tiny_package

HEATMAP_REGION = (10.0, 20.0, 74.0, 84.0)


def install_model(
    db: sessionmaker[Session],
    settings: Settings,
    folder: Path,
    mode: Mode,
    number: int = 1,
    **changes: object,
) -> ModelVersion:
    """A tiny model, installed and put in ``mode``; ``number`` makes the id and device UID unique."""
    source = write_tiny_package(
        folder,
        seed=number,
        id=f"openaim.tiny-{number}",
        device_uid=f"1.2.826.0.1.3680043.10.1234.{number}.0",
        **changes,
    )
    with catalog_transaction(db) as session:
        version = catalog.install(session, source, catalog.packages_dir(settings), "cli:test", (MODULE,))
        if mode is not Mode.OFF:
            catalog.set_mode(session, version.model_id, version.version, mode, "cli:test")
        session.flush()
        session.expunge(version)
    return version


@dataclass(frozen=True)
class Image2D:
    study_uid: str
    series_uid: str
    instance_uid: str


def store_chest_image(
    orthanc: OrthancConnection,
    shared_data: Path,
    study_date: str,
    patient_id: str,
    accession: str = "",
    patient_name: str = "",
    description: str = "",
) -> Image2D:
    """The real DX chest image under new UIDs, a date and a patient ID (and name) of the test's choosing."""
    dataset = pydicom.dcmread(shared_data / "dicom" / "dx_chest" / "dx_image.dcm")
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.StudyDate, dataset.StudyTime, dataset.PatientID = study_date, "101500", patient_id
    dataset.AccessionNumber = accession
    if patient_name:
        dataset.PatientName = patient_name
    if description:
        dataset.StudyDescription = description
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with orthanc.client() as client:
        client.post("/instances", content=buffer.getvalue()).raise_for_status()
    return Image2D(str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID), str(dataset.SOPInstanceUID))


def add_job(db: sessionmaker[Session], image: Image2D, version: ModelVersion, state: JobState) -> int:
    with transaction(db) as session:
        jobs.enqueue(session, image.study_uid, image.series_uid, version.id)
        job_id = (
            session.query(Job.id).filter_by(series_uid=image.series_uid, model_version_id=version.id).scalar()
        )
        session.execute(update(Job).where(Job.id == job_id).values(state=state.value))
    return int(job_id)


def heatmap_png() -> bytes:
    """An 8-bit map, bright in its centre, as the service stores it."""
    y, x = np.mgrid[0:32, 0:32]
    values = np.clip(255 - 12 * np.hypot(x - 16, y - 16), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    return buffer.getvalue()


def add_result(
    db: sessionmaker[Session],
    image: Image2D,
    version: ModelVersion,
    triage: str | None,
    probabilities: dict[str, float],
) -> int:
    """A done job and its result: one finding per label; positives get a box and a heatmap."""
    job_id = add_job(db, image, version, JobState.DONE)
    manifest = json.loads(version.manifest_json)
    outputs = {output["label"]: output for output in manifest["outputs"]}
    with transaction(db) as session:
        result = InferenceResult(
            job_id=job_id,
            study_uid=image.study_uid,
            series_uid=image.series_uid,
            sop_instance_uid=image.instance_uid,
            model_version_id=version.id,
            triage=triage,
            sr_uid=generate_uid(),
            seg_uid=generate_uid(),
        )
        for label, probability in probabilities.items():
            positive = probability >= outputs[label]["threshold"]
            result.findings.append(
                Finding(
                    label=label,
                    display_name=outputs[label]["display_name"],
                    probability=probability,
                    threshold=outputs[label]["threshold"],
                    positive=positive,
                    boxes_json=json.dumps([[20, 30, 60, 70]] if positive else []),
                    heatmap_png=heatmap_png() if positive else None,
                    heatmap_region=",".join(str(int(v)) for v in HEATMAP_REGION) if positive else None,
                )
            )
        session.add(result)
        session.flush()
        return result.id


def renumbered(paths: list[Path]) -> list[pydicom.Dataset]:
    """The files as a new study: every study, series, instance and frame-of-reference UID they hold
    replaced by a new one, consistently (a SEG or SR still points at its images), so that the copy never
    shares a SOP Instance UID with another test's (Orthanc's WADO-RS cannot retrieve a duplicated one)."""
    datasets = [pydicom.dcmread(path) for path in paths]
    keywords = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
    mapping = {
        str(value): generate_uid()
        for dataset in datasets
        for keyword in keywords
        if (value := dataset.get(keyword))
    }

    def remap(dataset: pydicom.Dataset) -> None:
        for element in dataset:
            if element.VR == "SQ":
                for item in element.value:
                    remap(item)
            elif element.VR == "UI" and element.value:
                values = element.value if element.VM > 1 else [element.value]
                new = [mapping.get(str(value), str(value)) for value in values]
                element.value = new if element.VM > 1 else new[0]

    for dataset in datasets:
        remap(dataset)
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return datasets


def store_result_object(
    orthanc: OrthancConnection,
    image: Image2D,
    modality: str,
    description: str,
    device_uid: str = "",
    series_number: int = 9901,
    series_uid: str = "",
) -> str:
    """An SR or SEG series in the image's study, as an AI result (or a reader's feedback) lands there: only
    the attributes the study page reads (the AI panel's parsing has tests of its own), and the algorithm's
    device UID when it is one of ours; ``series_uid`` as our writer names it (``ResultUids``). Its series
    UID."""
    source = pydicom.dcmread(io.BytesIO(_instance_bytes(orthanc, image)), stop_before_pixels=True)
    dataset = pydicom.Dataset()
    for keyword in (
        "PatientName",
        "PatientID",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
    ):
        setattr(dataset, keyword, source.get(keyword, ""))
    dataset.SOPClassUID = {"SR": "1.2.840.10008.5.1.4.1.1.88.34", "SEG": "1.2.840.10008.5.1.4.1.1.66.4"}[
        modality
    ]
    dataset.SOPInstanceUID, dataset.SeriesInstanceUID = generate_uid(), series_uid or generate_uid()
    dataset.Modality, dataset.SeriesDescription, dataset.SeriesNumber = modality, description, series_number
    dataset.InstanceNumber = 1
    if device_uid:
        equipment = pydicom.Dataset()
        equipment.DeviceUID = device_uid
        dataset.ContributingEquipmentSequence = [equipment]
    dataset.file_meta = pydicom.dataset.FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with orthanc.client() as client:
        client.post("/instances", content=buffer.getvalue()).raise_for_status()
    return str(dataset.SeriesInstanceUID)


def _instance_bytes(orthanc: OrthancConnection, image: Image2D) -> bytes:
    with orthanc.client() as client:
        found = client.post("/tools/lookup", content=image.instance_uid).json()
        return client.get(f"/instances/{found[0]['ID']}/file").content
