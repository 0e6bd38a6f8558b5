"""Orthanc as the archive that demo seeding fills: ``openaim.seed.SeedArchive``, done with Orthanc.

Files go in byte for byte: STOW-RS first, one request per batch, then Orthanc's own upload for each file
its STOW-RS did not store. The STOW-RS request is written here rather than sent with dicomweb-client,
whose ``store_instances`` re-encodes pydicom datasets: the fixtures must arrive as they are on disk.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from openaim.seed import Stored
from orthanc.connection import OrthancConnection
from orthanc.rest import OrthancRest, Upload

TIMEOUT = 300.0  # seconds: a batch of sixteen 1024x1024 images is one STOW-RS request


class OrthancSeedArchive:
    def __init__(self, connection: OrthancConnection) -> None:
        self._rest = OrthancRest(connection, timeout=TIMEOUT)
        self._client = connection.client(timeout=TIMEOUT)

    def close(self) -> None:
        self._rest.close()
        self._client.close()

    def __enter__(self) -> OrthancSeedArchive:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def present(self, sop_instance_uids: list[str]) -> set[str]:
        """One query, the UIDs matched as a DICOM list."""
        found = self._rest.find_instances({"SOPInstanceUID": "\\".join(sop_instance_uids)})
        return {item["MainDicomTags"].get("SOPInstanceUID", "") for item in found}

    def store(self, files: Mapping[str, bytes]) -> Stored:
        stowed, reasons = self._stow(files)
        outcome = Stored()
        for uid, data in files.items():
            if uid in stowed:
                outcome.added.add(uid)
                continue
            upload = self._rest.upload(data)
            status = str(upload.json().get("Status")) if upload.status_code == 200 else None
            if status == "Success":
                outcome.added.add(uid)
            elif status == "AlreadyStored":
                outcome.already_present.add(uid)
            else:
                stow_reason = reasons.get(uid, "not in the STOW-RS answer")
                outcome.failed[uid] = f"{stow_reason}; POST /instances: {status or _refusal(upload)}"
        return outcome

    def _stow(self, files: Mapping[str, bytes]) -> tuple[set[str], dict[str, str]]:
        """STOW-RS ``files`` (UID -> Part 10 bytes): the UIDs stored, and the reasons for the others."""
        boundary = uuid.uuid4().hex
        parts = [
            b"--%s\r\nContent-Type: application/dicom\r\n\r\n%s\r\n" % (boundary.encode(), data)
            for data in files.values()
        ]
        response = self._client.post(
            "/dicom-web/studies",
            content=b"".join(parts) + b"--%s--\r\n" % boundary.encode(),
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            reason = f"STOW-RS answered HTTP {response.status_code}"
            return set(), dict.fromkeys(files, reason)
        stored = {
            str(item.get("00081155", {}).get("Value", [""])[0])
            for item in _values(body, "00081199")  # ReferencedSOPSequence
        }
        reasons = {
            str(item.get("00081155", {}).get("Value", [""])[0]): "STOW-RS failure reason "
            + str(item.get("00081197", {}).get("Value", ["?"])[0])
            for item in _values(body, "00081198")  # FailedSOPSequence
        }
        return stored, reasons


def _refusal(upload: Upload) -> str:
    answer = upload.json()
    return f"HTTP {upload.status_code}: {answer.get('Details') or answer.get('Message')}"


def _values(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return list(body.get(tag, {}).get("Value", []))
