"""What the inference service asks of Orthanc: the change feed, a series' attributes, an image's bytes
(Orthanc's REST API, through orthanc/rest.py), and storing results (STOW-RS, dicomweb-client).
Synchronous: the service runs in its own thread."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from pydicom import Dataset

from orthanc import OrthancConnection
from orthanc.rest import OrthancError, OrthancNotFound, OrthancRest


class ArchiveUnavailable(RuntimeError):
    """Orthanc did not answer, or answered with an error: worth retrying later."""


class ArchiveRefused(ValueError):
    """The archive answered that it will not take these objects (an HTTP 4xx to STOW-RS): the same objects
    would be refused again, so retrying only delays the job's failure."""


# Client errors that say something about the request's circumstances, not about the objects: worth a retry
RETRYABLE_CLIENT_ERRORS = {401, 403, 408, 429}


class NotInArchive(LookupError):
    """The resource is gone (deleted since it was announced): nothing to retry."""


@dataclass(frozen=True)
class Change:
    seq: int
    change_type: str
    resource_id: str  # Orthanc's own identifier of the study/series/instance
    resource_type: str = ""  # Patient, Study, Series or Instance


@dataclass(frozen=True)
class SeriesInfo:
    orthanc_id: str
    series_uid: str
    first_instance_id: str  # the lowest InstanceNumber: what selectors and 2D models look at


@dataclass(frozen=True)
class ListedSeries:
    series_uid: str
    study_id: str  # Orthanc's ID of its study
    main_tags: dict[str, Any]  # Modality, SeriesNumber, SeriesDescription, ... as Orthanc's index has them


class InferenceArchive:
    def __init__(self, connection: OrthancConnection, timeout: float = 60.0) -> None:
        self._rest = OrthancRest(connection, timeout=timeout)
        self._stow_session = create_session_from_user_pass(connection.username, connection.password)
        self._dicomweb = DICOMwebClient(connection.dicomweb_url, session=self._stow_session, timeout=timeout)
        # The library retries every failed request 5 times with exponential waits (30 s against a stopped
        # Orthanc, a writer process blocked all along); the service's job back-off already retries.
        self._dicomweb.set_http_retry_params(retry=False)

    def close(self) -> None:
        self._rest.close()
        self._stow_session.close()

    def changes(self, since: int, limit: int = 200) -> tuple[list[Change], int, bool]:
        """Changes after ``since``: (changes, the last sequence number, whether the feed is exhausted)."""
        with _from_orthanc():
            answer, last, done = self._rest.changes(since, limit)
        found = [
            Change(item.sequence_id, item.change_type, item.resource_id, str(item.resource_type or ""))
            for item in answer
        ]
        return found, last, done

    def last_change(self) -> int:
        with _from_orthanc():
            return self._rest.last_change()

    def study_ids(self, since: int, limit: int) -> list[str]:
        """A page of Orthanc's study IDs (for a first indexing of what it already holds)."""
        with _from_orthanc():
            return self._rest.study_ids(since, limit)

    def study_count(self) -> int:
        with _from_orthanc():
            return self._rest.study_count()

    def study(self, study_id: str) -> dict[str, Any]:
        """The study as Orthanc's index holds it: its and its patient's main tags."""
        with _from_orthanc():
            return self._rest.study(study_id)

    def study_series_listed(self, study_id: str) -> list[dict[str, Any]]:
        """The study's series with their main tags (Modality, ...) and instance IDs."""
        with _from_orthanc():
            return self._rest.study_series(study_id)

    def series_page(self, since: int, limit: int) -> list[ListedSeries]:
        """A page of every series Orthanc holds, from its index alone (no file is read)."""
        with _from_orthanc():
            listed = self._rest.series_expanded(since, limit)
        return [
            ListedSeries(
                str(item["MainDicomTags"].get("SeriesInstanceUID", "")),
                item["ParentStudy"],
                item["MainDicomTags"],
            )
            for item in listed
        ]

    def study_is_stable(self, study_id: str) -> bool:
        """Whether Orthanc has seen no new instance of the study for StableAge seconds."""
        with _from_orthanc():
            return bool(self._rest.study(study_id).get("IsStable", False))

    def study_uid(self, study_id: str) -> str:
        with _from_orthanc():
            return str(self._rest.study(study_id)["MainDicomTags"]["StudyInstanceUID"])

    def series_of_study(self, study_id: str) -> dict[str, str]:
        """Series Instance UID -> Orthanc's series ID, for every series of the study."""
        with _from_orthanc():
            listed = self._rest.study_series(study_id)
        return {series["MainDicomTags"]["SeriesInstanceUID"]: series["ID"] for series in listed}

    def first_instance(self, series_id: str) -> str | None:
        """Orthanc's ID of the series' instance with the lowest Instance Number; None for an empty series."""
        with _from_orthanc():
            instances = self._rest.series_instances(series_id)
        return str(min(instances, key=_instance_order)["ID"]) if instances else None

    def series_by_uid(self, series_uid: str) -> SeriesInfo | None:
        with _from_orthanc():
            matches = self._rest.lookup(series_uid, "Series")
        first = self.first_instance(matches[0]) if matches else None
        return None if first is None else SeriesInfo(matches[0], series_uid, first)

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """The instance's attributes by keyword, pixel data left out (what selectors are matched on)."""
        with _from_orthanc():
            return self._rest.simplified_tags(instance_id)

    def instance_file(self, instance_id: str) -> bytes:
        with _from_orthanc():
            return self._rest.instance_file(instance_id)

    def store(self, datasets: Sequence[Dataset]) -> None:
        """STOW-RS; Orthanc keeps the first copy of a SOP Instance UID, so storing again changes nothing."""
        try:
            self._dicomweb.store_instances(list(datasets))
        except Exception as error:  # requests' and dicomweb-client's errors alike
            status = getattr(getattr(error, "response", None), "status_code", None)
            if isinstance(status, int) and 400 <= status < 500 and status not in RETRYABLE_CLIENT_ERRORS:
                raise ArchiveRefused(f"the archive refused the SR/SEG (STOW-RS answered {status})") from error
            raise ArchiveUnavailable(f"STOW-RS failed ({error.__class__.__name__}: {error})") from error


@contextmanager
def _from_orthanc() -> Iterator[None]:
    """Orthanc's errors as the service reads them: a 404 is final, anything else is worth retrying."""
    try:
        yield
    except OrthancNotFound as error:
        raise NotInArchive(str(error)) from error
    except OrthancError as error:
        raise ArchiveUnavailable(str(error)) from error


def _instance_order(instance: dict[str, Any]) -> tuple[int, str]:
    number = instance.get("MainDicomTags", {}).get("InstanceNumber", "")
    try:
        return int(str(number).strip() or 0), instance["ID"]
    except ValueError:
        return 0, instance["ID"]
