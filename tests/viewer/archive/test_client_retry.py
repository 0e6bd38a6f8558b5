"""A GET that meets a kept-alive connection Orthanc has just closed is sent once more; a second failure is
Orthanc being unreachable. (A unit test: the transport is faked, it is what the test is about.)"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from orthanc import OrthancConnection
from viewer.archive.client import Archive, ArchiveError

CONNECTION = OrthancConnection(url="http://127.0.0.1:1", username="u", password="p")


def _archive(failures: int) -> tuple[Archive, list[str]]:
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) <= failures:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, content=b"DICM")

    archive = Archive(CONNECTION)
    archive._client = httpx.AsyncClient(base_url=CONNECTION.url, transport=httpx.MockTransport(answer))
    return archive, calls


def test_a_get_on_a_connection_orthanc_closed_is_sent_once_more() -> None:
    archive, calls = _archive(failures=1)
    assert asyncio.run(archive._get("/studies/1.2/metadata", "application/dicom+json")).content == b"DICM"
    assert len(calls) == 2


def test_a_second_failure_is_orthanc_unreachable() -> None:
    archive, calls = _archive(failures=2)
    with pytest.raises(ArchiveError, match="unreachable"):
        asyncio.run(archive._get("/studies/1.2/metadata", "application/dicom+json"))
    assert len(calls) == 2
