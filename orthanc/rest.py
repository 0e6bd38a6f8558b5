"""The one way into Orthanc's own REST API, through ``orthanc-api-client``.

It offers what the platform asks of Orthanc's index and storage beyond DICOMweb: the change feed
(``/changes``), lookups of a DICOM UID (``/tools/lookup``) and of SOP Instance UIDs (``/tools/find``),
a study and the expanded listings of its series and instances, an instance's simplified tags, file and
metadata, Orthanc's own upload (``POST /instances``) and the liveness probe (``/system``). Errors come back
as three kinds, which every caller maps to its own: ``OrthancNotFound`` (404: the resource is gone),
``OrthancRefused`` (any other HTTP error) and ``OrthancUnreachable`` (no answer, or none in time).

DICOMweb (QIDO-RS, WADO-RS, STOW-RS) is not here: the inference service stores results with
dicomweb-client, and the viewer's DICOMweb proxy and frame path stay on async httpx, because they pass
Orthanc's answer on to the browser as it arrives (``aiter_raw``) and this library cannot stream: its
``requests`` session returns whole bodies. For a 100-slice 512x512 CT series (52 MB, WADO-RS, loopback),
httpx had the first bytes after 5 ms and all of them after 47 ms; the library's session returned the whole
body after 97 ms and held it all in memory.

The library is synchronous; the async viewer calls it through ``anyio.to_thread``. Measured on loopback
(2 cores, Orthanc 1.10, a 4-series study), the viewer's index lookup (``/tools/lookup`` + the study's series
+ its instances) took 2.0-2.4 ms through this adapter in a worker thread against 2.3-2.4 ms with async
httpx one at a time, and 2.0-2.1 against 3.2-3.5 ms each with 16 at once: the thread hop costs less than
httpx's async overhead, so the viewer's few REST calls come here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import orthanc_api_client.exceptions as api_errors
from orthanc_api_client import OrthancApiClient
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from orthanc.connection import OrthancConnection

CONNECT_TIMEOUT = 5.0  # seconds: Orthanc is on loopback or the hospital's own network
POOL_SIZE = 32  # connections kept open: the viewer calls from up to anyio's 40 worker threads

T = TypeVar("T")


class OrthancError(RuntimeError):
    """Orthanc did not do what was asked. The message names an HTTP status or an error class, never a
    URL: UIDs stay out of logs."""


class OrthancUnreachable(OrthancError):
    """No answer: refused, reset, cut off or too slow."""


class OrthancRefused(OrthancError):
    """Orthanc answered with an HTTP error."""

    def __init__(self, status_code: int, request: str, answer: dict[str, Any] | None = None) -> None:
        super().__init__(f"Orthanc answered {status_code} to {request}")
        self.status_code = status_code
        self.answer = answer or {}


class OrthancNotFound(OrthancRefused):
    """404: the resource is not (or no longer) in Orthanc."""


@dataclass(frozen=True)
class Upload:
    """Orthanc's answer to an upload, a refusal included: each caller words a refusal its own way.
    It reads like an HTTP response (``status_code``, ``json()``) because that is what the callers read."""

    status_code: int
    answer: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return self.answer


class _Transport(HTTPAdapter):
    """A timeout on every request (``requests`` has none by default and the library passes none), and no
    retries: the library's default retries a refused connection three times with back-off, which held every
    call to a stopped Orthanc for 1.2 s (37 ms without), and every caller already retries in its own way
    (the launcher polls, the inference service backs off, the browser asks again). A request that meets
    Orthanc closing an idle kept-alive connection (after 1 s) fails like one to a stopped Orthanc: 4 in 704
    requests sent right at that second, the same count as httpx, which the callers used before."""

    def __init__(self, timeout: float) -> None:
        super().__init__(pool_maxsize=POOL_SIZE, max_retries=0)
        self._timeout = (min(CONNECT_TIMEOUT, timeout), timeout)

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: dict[str, str] | None = None,
    ) -> Response:
        return super().send(request, stream, timeout or self._timeout, verify, cert, proxies)


class _Client(OrthancApiClient):
    """The library's client on ``_Transport``. Both hooks are the library's own internals (pinned <0.26)."""

    def __init__(self, connection: OrthancConnection, timeout: float) -> None:
        super().__init__(connection.url, user=connection.username, pwd=connection.password)
        transport = _Transport(timeout)
        for scheme in ("http://", "https://"):
            self._http_session.mount(scheme, transport)

    def _translate_exception(self, request_exception: Exception, url: str) -> None:
        """The library raises its own error for a refused connection or a timeout, and returns None for
        the rest (a body cut off mid-way): those are no answer either."""
        super()._translate_exception(request_exception, url)
        raise api_errors.ConnectionError(url=url)


class OrthancRest:
    """Orthanc's REST API for one caller. Thread-safe: the session's connection pool is shared."""

    def __init__(self, connection: OrthancConnection, timeout: float = 60.0) -> None:
        self._timeout = timeout
        self._api = _Client(connection, timeout)

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> OrthancRest:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def is_alive(self) -> bool:
        """Whether Orthanc answers ``/system`` with these credentials."""
        return bool(self._api.is_alive(timeout=self._timeout))

    def changes(self, since: int, limit: int) -> tuple[list[Any], int, bool]:
        """Changes after ``since`` (the library's ``Change``: ``sequence_id``, ``change_type``,
        ``resource_id``), the last sequence number, and whether the feed is exhausted."""
        changes, last, done = _call("GET changes", self._api.get_changes, since=since, limit=limit)
        return list(changes), int(last), bool(done)

    def last_change(self) -> int:
        """The sequence number of Orthanc's newest change (0 when it has none)."""
        return int(_call("GET changes", self._api.get_json, "changes?last").get("Last", 0))

    def study_count(self) -> int:
        """How many studies Orthanc holds (``/statistics``)."""
        return int(_call("GET statistics", self._api.get_json, "statistics")["CountStudies"])

    def study_ids(self, since: int, limit: int) -> list[str]:
        """Orthanc's IDs of its studies, ``limit`` at a time from position ``since``."""
        return [
            str(item)
            for item in _call("GET studies", self._api.get_json, f"studies?since={since}&limit={limit}")
        ]

    def series_expanded(self, since: int, limit: int) -> list[dict[str, Any]]:
        """A page of Orthanc's series, each with its main tags, parent study and ``IsStable``."""
        return self._list(f"series?expand&since={since}&limit={limit}")

    def lookup(self, uid: str, level: str) -> list[str]:
        """Orthanc's IDs of the resources at ``level`` (Study, Series, Instance) with this DICOM UID."""
        return list(_call("POST tools/lookup", self._api.lookup, uid, filter=level))

    def study(self, study_id: str) -> dict[str, Any]:
        return dict(_call("GET studies", self._api.studies.get_json, study_id))

    def study_series(self, study_id: str) -> list[dict[str, Any]]:
        return self._list(f"studies/{study_id}/series")

    def study_instances(self, study_id: str) -> list[dict[str, Any]]:
        return self._list(f"studies/{study_id}/instances")

    def series_instances(self, series_id: str) -> list[dict[str, Any]]:
        return self._list(f"series/{series_id}/instances")

    def simplified_tags(self, instance_id: str) -> dict[str, Any]:
        """The instance's attributes by keyword, pixel data left out."""
        path = f"instances/{instance_id}/simplified-tags"
        return dict(_call("GET instances", self._api.get_json, path))

    def instance_file(self, instance_id: str) -> bytes:
        return bytes(_call("GET instances", self._api.instances.get_file, instance_id))

    def instance_metadata(self, instance_id: str, name: str) -> str | None:
        """One metadata item of an instance (e.g. ``TransferSyntax``); None when it has none."""
        get = self._api.instances.get_string_metadata
        value = _call("GET instances", get, instance_id, name)
        return None if value is None else str(value)

    def find_instances(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """The instances matching a DICOM query (``/tools/find``, expanded)."""
        body = {"Level": "Instance", "Query": dict(query), "Expand": True}
        return list(_call("POST tools/find", self._api.post, "tools/find", json=body).json())

    def upload(self, data: bytes) -> Upload:
        """Orthanc's own upload of one DICOM file, bytes as given: Status ``Success`` or ``AlreadyStored``."""
        headers = {"Content-Type": "application/dicom"}
        try:
            response = _call("POST instances", self._api.post, "instances", data=data, headers=headers)
        except OrthancRefused as refusal:
            return Upload(refusal.status_code, refusal.answer)
        return Upload(response.status_code, response.json())

    def _list(self, path: str) -> list[dict[str, Any]]:
        return list(_call(f"GET {path.split('/')[0]}", self._api.get_json, path))


def _call(request: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call`` with the library's errors as this module's; ``request`` names it in messages."""
    try:
        return call(*args, **kwargs)
    except api_errors.ResourceNotFound as error:
        raise OrthancNotFound(404, request) from error
    except api_errors.HttpError as error:
        raise OrthancRefused(error.http_status_code, request, _answer(error.request_response)) from error
    except api_errors.OrthancApiException as error:  # raised while handling ``requests``' own error
        cause = type(error.__context__ or error).__name__
        raise OrthancUnreachable(f"Orthanc is unreachable ({cause})") from error


def _answer(response: Response | None) -> dict[str, Any]:
    """The JSON body of an error answer (Orthanc's Message and Details), empty when there is none."""
    try:
        body = response.json() if response is not None else None
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
