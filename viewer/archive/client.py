"""The viewer's way into Orthanc: DICOMweb searches for pages and a streaming pass-through for the
browser-facing proxy (async httpx), and the few reads of Orthanc's own index and its upload (orthanc/rest.py,
in a worker thread: its docstring has the measurement). The browser never talks to Orthanc itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import anyio.to_thread
import httpx
from pydicom import Dataset

from orthanc import OrthancConnection
from orthanc.rest import OrthancError, OrthancRest, Upload
from viewer.archive.multipart import MultipartError, multipart_bodies

# Attributes the worklist needs beyond QIDO-RS's default return keys.
STUDY_FIELDS = ("00081030", "00080061", "00201208", "00201206")
SERIES_FIELDS = ("0008103E", "00201209", "00180015")
INSTANCE_FIELDS = ("00280010", "00280011", "00280008")

T = TypeVar("T")
SERIES_READ_BYTES = 1 << 20


class ArchiveError(RuntimeError):
    """Orthanc did not answer as expected."""


class NotInArchive(ArchiveError):
    """Orthanc has no such object (deleted, or never stored): the reader's answer is 404, not 502."""


@dataclass(frozen=True)
class Upstream:
    status_code: int
    headers: Mapping[str, str]
    body: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class IndexedInstance:
    """An instance as Orthanc's own index knows it (no file read)."""

    instance_uid: str
    series_uid: str
    number: int | None  # InstanceNumber
    frames: int
    # Image Position and Orientation (Patient) as the index holds them (backslash-separated; "" when absent):
    # enough to put slices in anatomical order without reading the files
    position: str = ""
    orientation: str = ""


class Archive:
    def __init__(self, connection: OrthancConnection) -> None:
        self.connection = connection
        self._client = httpx.AsyncClient(
            base_url=connection.dicomweb_url,
            auth=(connection.username, connection.password),
            timeout=httpx.Timeout(60.0, connect=5.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self._blocking = httpx.Client(  # for whole series, read in a worker thread
            base_url=connection.dicomweb_url,
            auth=(connection.username, connection.password),
            timeout=httpx.Timeout(60.0, connect=5.0),
        )
        self._rest = OrthancRest(connection)

    async def aclose(self) -> None:
        await self._client.aclose()
        self._blocking.close()
        self._rest.close()

    async def _search(self, path: str, params: list[tuple[str, str]]) -> list[Dataset]:
        # Orthanc matches wildcards only when `*` arrives unencoded (as with `window=C,W` commas).
        url = httpx.URL(f"{self.connection.dicomweb_url}{path}", query=urlencode(params, safe="*,").encode())
        try:
            response = await self._fetch(url, {"Accept": "application/dicom+json"})
        except httpx.TransportError as error:
            raise ArchiveError(f"Orthanc is unreachable: {error.__class__.__name__}") from error
        if response.status_code == 204 or not response.content:
            return []
        if response.status_code != 200:
            raise ArchiveError(f"Orthanc answered {response.status_code} to a search")
        return [Dataset.from_json(item) for item in response.json()]

    async def search_studies(self, filters: Mapping[str, str], limit: int = 200) -> list[Dataset]:
        params = [(key, value) for key, value in filters.items() if value]
        params += [("includefield", tag) for tag in STUDY_FIELDS]
        params.append(("limit", str(limit)))
        return await self._search("/studies", params)

    async def find_study(self, study_uid: str) -> Dataset | None:
        found = await self.search_studies({"StudyInstanceUID": study_uid}, limit=1)
        return found[0] if found else None

    async def search_series(self, study_uid: str) -> list[Dataset]:
        params = [("includefield", tag) for tag in SERIES_FIELDS]
        return await self._search(f"/studies/{study_uid}/series", params)

    async def search_instances(self, study_uid: str, series_uid: str) -> list[Dataset]:
        params = [("includefield", tag) for tag in INSTANCE_FIELDS]
        return await self._search(f"/studies/{study_uid}/series/{series_uid}/instances", params)

    async def find_instance(self, study_uid: str, instance_uid: str) -> Dataset | None:
        """One instance of the study by its SOP Instance UID (its series UID included)."""
        found = await self._search(f"/studies/{study_uid}/instances", [("SOPInstanceUID", instance_uid)])
        return found[0] if found else None

    async def retrieve_instance(self, study_uid: str, series_uid: str, instance_uid: str) -> bytes:
        """One instance as stored (WADO-RS, application/dicom, no transcoding by Orthanc)."""
        url = f"/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}"
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        try:
            response = await self._fetch(url, {"Accept": accept})
        except httpx.TransportError as error:
            raise ArchiveError(f"Orthanc is unreachable: {error.__class__.__name__}") from error
        if response.status_code == 404:
            raise NotInArchive("Orthanc has no such instance")
        if response.status_code != 200:
            raise ArchiveError(f"Orthanc answered {response.status_code} to a retrieve")
        return _single_part(response.headers.get("content-type", ""), response.content)

    def series_files(
        self, study_uid: str, series_uid: str, largest_file: int
    ) -> Generator[bytes, None, None]:
        """Every instance of a series as stored, one DICOM file at a time as it arrives (WADO-RS Retrieve
        Series, no transcoding): one request for the whole series. Blocking: iterate in a worker thread.

        Orthanc sent a 200-slice CT (105 MB) this way in ~180 ms on loopback, where it serves ~190 frames/s
        asked for one at a time. Read synchronously in 1 MB pieces: the same answer through async httpx,
        in its 64 KB pieces on the event loop, took ~330 ms before any file was parsed. A file larger than
        ``largest_file`` bytes stops the reading (ArchiveError) rather than being held in memory.
        """
        headers = {
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
            "Accept-Encoding": "identity",
        }
        try:
            with self._blocking.stream(
                "GET", f"/studies/{study_uid}/series/{series_uid}", headers=headers
            ) as answer:
                if answer.status_code == 404:
                    raise NotInArchive("Orthanc has no such series")
                if answer.status_code != 200:
                    raise ArchiveError(f"Orthanc answered {answer.status_code} to a series retrieve")
                content_type = answer.headers.get("content-type", "")
                yield from multipart_bodies(content_type, answer.iter_raw(SERIES_READ_BYTES), largest_file)
        except httpx.TransportError as error:
            raise ArchiveError(f"Orthanc is unreachable: {error.__class__.__name__}") from error
        except MultipartError as error:
            raise ArchiveError(f"Orthanc's series answer is malformed: {error}") from error

    async def search_study_instances(self, study_uid: str) -> list[Dataset]:
        """Every instance of a study in one request, each naming its series."""
        params = [("includefield", tag) for tag in ("0020000E", *INSTANCE_FIELDS)]
        return await self._search(f"/studies/{study_uid}/instances", params)

    async def open_stream(
        self, method: str, path: str, query: str, headers: Mapping[str, str], content: bytes = b""
    ) -> Upstream:
        """Start a request to Orthanc and hand back its response as a stream of bytes."""
        # The raw query string is kept as sent: Orthanc's `window=C,W,linear` needs literal commas.
        url = httpx.URL(f"{self.connection.dicomweb_url}{path}", query=query.encode())
        request = self._client.build_request(method, url, headers=dict(headers), content=content)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as error:
            raise ArchiveError(f"Orthanc is unreachable: {error.__class__.__name__}") from error
        return Upstream(response.status_code, response.headers, response.aiter_raw(), response.aclose)

    async def _get(self, url: str, accept: str) -> httpx.Response:
        """A GET answered uncompressed: Orthanc gzips for any client that accepts it (httpx does by
        default), which cut frames from ~110 to ~19 per second on loopback for no gain."""
        try:
            return await self._fetch(url, {"Accept": accept, "Accept-Encoding": "identity"})
        except httpx.TransportError as error:
            raise ArchiveError(f"Orthanc is unreachable: {error.__class__.__name__}") from error

    async def _fetch(self, url: str | httpx.URL, headers: dict[str, str]) -> httpx.Response:
        """A GET, sent once more if Orthanc closed the kept-alive connection it went out on before
        answering (RemoteProtocolError): a GET is safe to repeat, and a full test run met this race."""
        try:
            return await self._client.get(url, headers=headers)
        except httpx.RemoteProtocolError:
            return await self._client.get(url, headers=headers)

    async def indexed_instances(self, study_uid: str, series_uid: str | None = None) -> list[IndexedInstance]:
        """The instances of a study (or of one of its series) from Orthanc's index, through its REST API.

        QIDO-RS at instance level reads every file: 250-500 ms for a 200-slice CT, where the index answers
        in ~5 ms. Only what the index holds comes back: UIDs, instance numbers, frame counts, slice geometry.
        """
        study_id = await self._orthanc_id(study_uid, "Study")
        if study_id is None:
            return []
        series = await self._index(self._rest.study_series, study_id)
        uid_of = {item["ID"]: item["MainDicomTags"].get("SeriesInstanceUID", "") for item in series}
        if series_uid is not None:
            ids = [orthanc_id for orthanc_id, uid in uid_of.items() if uid == series_uid]
            listed = [
                item
                for orthanc_id in ids
                for item in await self._index(self._rest.series_instances, orthanc_id)
            ]
        else:
            listed = await self._index(self._rest.study_instances, study_id)
        return [_indexed(item, uid_of.get(item.get("ParentSeries", ""), "")) for item in listed]

    async def _orthanc_id(self, uid: str, level: str) -> str | None:
        found = await self._index(self._rest.lookup, uid, level)
        return found[0] if found else None

    async def _index(self, call: Callable[..., T], *args: Any) -> T:
        """A call to Orthanc's REST API, in a worker thread: the adapter is synchronous."""
        try:
            return await anyio.to_thread.run_sync(call, *args)
        except OrthancError as error:
            raise ArchiveError(str(error)) from error

    async def series_metadata(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """Every instance's attributes (DICOM JSON) in one request; empty when the series is unknown."""
        response = await self._get(
            f"/studies/{study_uid}/series/{series_uid}/metadata", "application/dicom+json"
        )
        if response.status_code in (204, 404):
            return []
        if response.status_code != 200:
            raise ArchiveError(f"Orthanc answered {response.status_code} to a metadata request")
        return list(response.json())

    async def instance_metadata(self, study_uid: str, series_uid: str, instance_uid: str) -> Dataset | None:
        path = f"/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/metadata"
        response = await self._get(path, "application/dicom+json")
        if response.status_code in (204, 404):
            return None
        if response.status_code != 200:
            raise ArchiveError(f"Orthanc answered {response.status_code} to a metadata request")
        found = response.json()
        return Dataset.from_json(found[0], bulk_data_uri_handler=lambda *_: b"") if found else None

    async def fetch_frames(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: Sequence[int], transfer_syntax: str
    ) -> httpx.Response:
        """WADO-RS frames, whole (multipart/related); ``*`` asks for them as stored, without transcoding."""
        frames = ",".join(str(number) for number in numbers)
        path = f"/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/frames/{frames}"
        accept = f'multipart/related; type="application/octet-stream"; transfer-syntax={transfer_syntax}'
        return await self._get(path, accept)

    async def stored_transfer_syntax(self, instance_uid: str) -> str | None:
        """The transfer syntax Orthanc keeps an instance in (its REST API; DICOMweb does not say)."""
        orthanc_id = await self._orthanc_id(instance_uid, "Instance")
        if orthanc_id is None:
            return None
        found = await self._index(self._rest.instance_metadata, orthanc_id, "TransferSyntax")
        return None if found is None else found.strip()

    async def bulk_data(self, uri: str) -> httpx.Response | None:
        """A BulkDataURI (e.g. a palette's LUT data); only URIs under this archive's DICOMweb root."""
        if not uri.startswith(f"{self.connection.dicomweb_url}/"):
            return None
        return await self._get(uri, 'multipart/related; type="application/octet-stream"')

    async def store_instance(self, data: bytes) -> Upload:
        """Store one DICOM file through Orthanc's REST API (bytes kept exactly as received)."""
        return await self._index(self._rest.upload, data)


def _single_part(content_type: str, body: bytes) -> bytes:
    """The body of the first part of a multipart/related answer."""
    try:
        return next(multipart_bodies(content_type, [body]))
    except (MultipartError, StopIteration) as error:
        raise ArchiveError(f"Orthanc's answer is not the multipart it says: {error!r}") from error


def _indexed(item: dict[str, Any], series_uid: str) -> IndexedInstance:
    tags = item.get("MainDicomTags", {})
    number = str(tags.get("InstanceNumber", "")).strip()
    frames = str(tags.get("NumberOfFrames", "")).strip()
    return IndexedInstance(
        instance_uid=str(tags.get("SOPInstanceUID", "")),
        series_uid=series_uid,
        number=int(number) if number.lstrip("-").isdigit() else None,
        frames=int(frames) if frames.isdigit() and int(frames) > 0 else 1,
        position=str(tags.get("ImagePositionPatient", "")).strip(),
        orientation=str(tags.get("ImageOrientationPatient", "")).strip(),
    )
