"""What the inference service asks of Orthanc: the change feed, a series' attributes, an image's bytes,
and storing results (STOW-RS). Synchronous: the service runs in its own thread."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from pydicom import Dataset

from orthanc import OrthancConnection


class ArchiveUnavailable(RuntimeError):
    """Orthanc did not answer, or answered with an error: worth retrying later."""


class NotInArchive(LookupError):
    """The resource is gone (deleted since it was announced): nothing to retry."""


@dataclass(frozen=True)
class Change:
    seq: int
    change_type: str
    resource_id: str  # Orthanc's own identifier of the study/series/instance


@dataclass(frozen=True)
class SeriesInfo:
    orthanc_id: str
    series_uid: str
    first_instance_id: str  # the lowest InstanceNumber: what selectors and 2D models look at


class InferenceArchive:
    def __init__(self, connection: OrthancConnection, timeout: float = 60.0) -> None:
        self._client = connection.client(timeout=timeout)
        self._stow_session = create_session_from_user_pass(connection.username, connection.password)
        self._dicomweb = DICOMwebClient(connection.dicomweb_url, session=self._stow_session, timeout=timeout)

    def close(self) -> None:
        self._client.close()
        self._stow_session.close()

    def _get(self, path: str, **params: Any) -> Any:
        try:
            response = self._client.get(path, params=params)
        except httpx.TransportError as error:
            raise ArchiveUnavailable(f"Orthanc is unreachable ({error.__class__.__name__})") from error
        if response.status_code == 404:
            raise NotInArchive(path.split("/")[1])
        if response.status_code != 200:
            raise ArchiveUnavailable(f"Orthanc answered {response.status_code} to GET {path.split('/')[1]}")
        return response.json() if "json" in response.headers.get("content-type", "") else response.content

    def changes(self, since: int, limit: int = 200) -> tuple[list[Change], int, bool]:
        """Changes after ``since``: (changes, the last sequence number, whether the feed is exhausted)."""
        answer = self._get("/changes", since=since, limit=limit)
        changes = [Change(item["Seq"], item["ChangeType"], item["ID"]) for item in answer["Changes"]]
        return changes, int(answer["Last"]), bool(answer["Done"])

    def study_uid(self, study_id: str) -> str:
        return str(self._get(f"/studies/{study_id}")["MainDicomTags"]["StudyInstanceUID"])

    def series_of_study(self, study_id: str) -> dict[str, str]:
        """Series Instance UID -> Orthanc's series ID, for every series of the study."""
        return {
            series["MainDicomTags"]["SeriesInstanceUID"]: series["ID"]
            for series in self._get(f"/studies/{study_id}/series")
        }

    def first_instance(self, series_id: str) -> str | None:
        """Orthanc's ID of the series' instance with the lowest Instance Number; None for an empty series."""
        instances = self._get(f"/series/{series_id}/instances")
        return str(min(instances, key=_instance_order)["ID"]) if instances else None

    def series_by_uid(self, series_uid: str) -> SeriesInfo | None:
        try:
            response = self._client.post("/tools/lookup", content=series_uid)
        except httpx.TransportError as error:
            raise ArchiveUnavailable(f"Orthanc is unreachable ({error.__class__.__name__})") from error
        matches = [item for item in response.json() if item.get("Type") == "Series"]
        first = self.first_instance(matches[0]["ID"]) if matches else None
        return None if first is None else SeriesInfo(matches[0]["ID"], series_uid, first)

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """The instance's attributes by keyword, pixel data left out (what selectors are matched on)."""
        tags: dict[str, Any] = self._get(f"/instances/{instance_id}/simplified-tags")
        return tags

    def instance_file(self, instance_id: str) -> bytes:
        data: bytes = self._get(f"/instances/{instance_id}/file")
        return data

    def store(self, datasets: Sequence[Dataset]) -> None:
        """STOW-RS; Orthanc keeps the first copy of a SOP Instance UID, so storing again changes nothing."""
        try:
            self._dicomweb.store_instances(list(datasets))
        except Exception as error:  # requests' and dicomweb-client's errors alike: the archive is the problem
            raise ArchiveUnavailable(f"STOW-RS failed ({error.__class__.__name__}: {error})") from error


def _instance_order(instance: dict[str, Any]) -> tuple[int, str]:
    number = instance.get("MainDicomTags", {}).get("InstanceNumber", "")
    try:
        return int(str(number).strip() or 0), instance["ID"]
    except ValueError:
        return 0, instance["ID"]
