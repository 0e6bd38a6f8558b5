"""DICOM objects for the inference tests: real chest X-rays (NIH ChestX-ray14 wrapped as the demo seeds
them) and the bad inputs a hospital archive really holds, each with attributes that pass a chest model's
selectors so that the runtime itself, not the router, has to refuse them."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from openaim.seed import cxr_to_dicom, encode
from orthanc import OrthancConnection

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def chest_xray(shared_data: Path, index: int = 0) -> Dataset:
    pngs = sorted((shared_data / "cxr14" / "small").glob("*.png"))
    return cxr_to_dicom(pngs[index])


def renewed(dataset: Dataset) -> Dataset:
    """The same object as a new study (new UIDs): one image can stand for several cases."""
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return dataset


def lateral(shared_data: Path) -> Dataset:
    dataset = renewed(chest_xray(shared_data, 1))
    dataset.ViewPosition = "LL"
    return dataset


def one_pixel(shared_data: Path) -> Dataset:
    dataset = renewed(chest_xray(shared_data, 2))
    dataset.Rows = dataset.Columns = 1
    dataset.PixelData = b"\x80\x00"  # one 8-bit pixel, padded to even length
    return dataset


def huge_header(shared_data: Path) -> Dataset:
    dataset = renewed(chest_xray(shared_data, 3))
    dataset.Rows = dataset.Columns = 20000  # claims 400 megapixels; carries 64 KB
    return dataset


def pdf_labelled_as_chest_xray(shared_data: Path) -> Dataset:
    """An encapsulated PDF whose header says DX chest PA: a mislabelled object the selectors let through."""
    template = chest_xray(shared_data, 4)
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = ENCAPSULATED_PDF
    for keyword in ("PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber"):
        setattr(dataset, keyword, template.get(keyword))
    dataset.Modality, dataset.BodyPartExamined, dataset.ViewPosition = "DX", "CHEST", "PA"
    dataset.MIMETypeOfEncapsulatedDocument = "application/pdf"
    dataset.DocumentTitle = "Referral letter"
    dataset.BurnedInAnnotation = "YES"
    dataset.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    return renewed(dataset)


def truncated_bytes(shared_data: Path) -> bytes:
    data = encode(renewed(chest_xray(shared_data, 5)))
    return data[: len(data) - 20000]  # the pixel data stops a third of the way through


def store(orthanc: OrthancConnection, *items: Dataset | bytes) -> list[httpx.Response]:
    with orthanc.client() as client:
        return [
            client.post("/instances", content=item if isinstance(item, bytes) else encode(item))
            for item in items
        ]


def bright_square(dataset: Dataset) -> Dataset:
    """Replace the pixels by a dark image with one bright square: the tiny test model's 'finding'."""
    pixels = np.zeros((int(dataset.Rows), int(dataset.Columns)), dtype=np.uint8)
    pixels[16:96, 128:208] = 255
    dataset.PixelData = pixels.tobytes()
    return dataset
