"""The browser-facing DICOMweb proxy (QIDO-RS, WADO-RS, STOW-RS) in front of Orthanc.

UIDs are validated before anything is sent to Orthanc; responses stream through unchanged, except where
the AI policy (viewer/reading/ai_policy.py) hides series from this user: a route naming a hidden series
answers 404, and a study's series search and metadata leave the hidden series out.
Uploads are checked file by file and stored only if every file is valid DICOM.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from openaim import audit
from viewer.access.deps import Admin, ArchiveClient, Audit, ImageReader, Reader
from viewer.archive.client import Archive, ArchiveError
from viewer.archive.stow import UploadError, read_upload, stow_response
from viewer.archive.uids import FrameList, InstanceUID, SeriesUID, StudyUID
from viewer.reading.ai_policy import SeriesFilter, ShownSeries, StudySeriesFilter
from viewer.reading.frame_encoding import (
    AS_STORED,
    BIG_ENDIAN,
    EXPLICIT_LE,
    FrameError,
    PixelFormat,
    Undecodable,
    multipart_body,
    transfer_syntax_of,
)
from viewer.reading.frames import Frames, InstanceFrames, series_bulk
from viewer.reading.slice_order import in_display_order, indexed_place

router = APIRouter(prefix="/dicomweb")

# Headers from Orthanc worth passing to the browser; the rest (auth challenges, server) stay behind.
PASSED_HEADERS = ("content-type", "content-length", "content-encoding", "etag", "last-modified")
# QIDO-RS paging (PS3.18 8.3.4.4): Orthanc answers 500 to `limit=-1`, which the proxy would pass on as 502.
PAGING = re.compile(r"[0-9]{1,9}")


def rendered_media_type(accept: str) -> str:
    """Orthanc DICOMweb 1.7 refuses a browser's image Accept list (`image/avif,...,image/*`) with 400.
    Ask for one type it renders: PNG (lossless) unless the client asked for JPEG only."""
    wants_jpeg_only = "image/jpeg" in accept and not any(t in accept for t in ("image/png", "image/*", "*/*"))
    return "image/jpeg" if wants_jpeg_only else "image/png"


def _checked_paging(request: Request) -> None:
    """A search's limit and offset are whole numbers, or the search is the client's mistake (400)."""
    for name in ("limit", "offset"):
        for value in request.query_params.getlist(name):
            if not PAGING.fullmatch(value):
                raise HTTPException(400, f"{name} must be a whole number from 0 to 999999999")


async def _forward(
    request: Request, archive: Archive, path: str, accept_type: str | None = None, pixels: bool = False
) -> Response:
    accept = {"Accept": accept_type or request.headers.get("accept", "*/*")}
    try:
        upstream = await archive.open_stream("GET", path, request.url.query, accept)
    except ArchiveError as error:
        raise HTTPException(502, str(error)) from error
    if upstream.status_code >= 400:
        await upstream.close()
        if pixels and upstream.status_code == 500:  # Orthanc is up; this file's pixels it cannot read
            raise HTTPException(422, "this file cannot be decoded: the archive could not read its pixels")
        status = upstream.status_code if upstream.status_code in (400, 404, 406) else 502
        raise HTTPException(status, "Not found in the archive." if status == 404 else "Archive error.")
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in PASSED_HEADERS}
    if pixels:  # the pixels of an instance UID never change; searches and metadata do (new series)
        headers["cache-control"] = "private, max-age=3600"
    # Closing in the background also frees Orthanc's connection when the browser goes away mid-stream.
    return StreamingResponse(
        upstream.body,
        status_code=upstream.status_code,
        headers=headers,
        background=BackgroundTask(upstream.close),
    )


@router.get("/studies")
async def search_studies(request: Request, _: Reader, archive: ArchiveClient, trail: Audit) -> Response:
    trail.record(
        audit.EventType.QUERY,
        action=audit.Action.EXECUTE,
        detail={"scope": "qido-rs studies", "query": request.url.query[:512]},
    )
    _checked_paging(request)
    return await _forward(request, archive, "/studies")


async def _forward_shown(
    request: Request, archive: Archive, path: str, shown: SeriesFilter, always: bool = False
) -> Response:
    """A study-level DICOM JSON answer (series search, metadata) with only the items of series ``shown``;
    streamed through unchanged when nothing is hidden and not ``always`` (a study's metadata: megabytes,
    where a series search is a few kilobytes, always read through so a series stored in the moment since
    the policy looked is left out too)."""
    if not shown.hidden and not always:
        return await _forward(request, archive, path)
    accept = {"Accept": "application/dicom+json", "Accept-Encoding": "identity"}  # parsed here, not passed
    try:
        upstream = await archive.open_stream("GET", path, request.url.query, accept)
    except ArchiveError as error:
        raise HTTPException(502, str(error)) from error
    try:
        if upstream.status_code >= 400:
            status = upstream.status_code if upstream.status_code in (400, 404, 406) else 502
            raise HTTPException(status, "Not found in the archive." if status == 404 else "Archive error.")
        body = b"".join([chunk async for chunk in upstream.body])
    finally:
        await upstream.close()
    items = json.loads(body) if body.strip() else []
    kept = [item for item in items if shown.shows(_series_of(item))]
    return JSONResponse(kept, media_type="application/dicom+json")


def _series_of(item: dict[str, object]) -> str:
    element = item.get("0020000E")
    values = element.get("Value") if isinstance(element, dict) else None
    return str(values[0]) if isinstance(values, list) and values else ""


@router.get("/studies/{study_uid}/series")
async def search_series(
    request: Request, study_uid: StudyUID, _: Reader, shown: StudySeriesFilter, archive: ArchiveClient
) -> Response:
    _checked_paging(request)
    return await _forward_shown(request, archive, f"/studies/{study_uid}/series", shown, always=True)


@router.get("/studies/{study_uid}/series/{series_uid}/instances")
async def search_instances(
    request: Request,
    study_uid: StudyUID,
    series_uid: SeriesUID,
    _: Reader,
    __: Annotated[None, Depends(_checked_paging)],  # before the series is looked for: bad paging is 400
    shown: ShownSeries,
    archive: ArchiveClient,
) -> Response:
    return await _forward(request, archive, f"/studies/{study_uid}/series/{series_uid}/instances")


@router.get("/studies/{study_uid}/metadata")
async def study_metadata(
    request: Request, study_uid: StudyUID, _: Reader, shown: StudySeriesFilter, archive: ArchiveClient
) -> Response:
    return await _forward_shown(request, archive, f"/studies/{study_uid}/metadata", shown)


@router.get("/studies/{study_uid}/series/{series_uid}/metadata")
async def series_metadata(
    request: Request,
    study_uid: StudyUID,
    series_uid: SeriesUID,
    _: Reader,
    shown: ShownSeries,
    archive: ArchiveClient,
) -> Response:
    return await _forward(request, archive, f"/studies/{study_uid}/series/{series_uid}/metadata")


def frames_answer(accept: str) -> str | None:
    """How a frames request is answered: ``*`` (as stored, straight from Orthanc), Explicit VR Little
    Endian (decoded by the platform; also WADO-RS's default), or None (refused: asking Orthanc to transcode
    into anything else could reach a JPEG 2000 file, which crashes Orthanc 1.10)."""
    syntax = transfer_syntax_of(accept)
    if syntax == AS_STORED:
        return AS_STORED
    if syntax not in (None, EXPLICIT_LE):
        return None
    types = re.findall(r'type\s*=\s*"?([^";,\s]+)', accept)
    return EXPLICIT_LE if all(t == "application/octet-stream" for t in types) else None


@router.get("/studies/{study_uid}/series/{series_uid}")
async def series_bulk_data(
    request: Request,
    study_uid: StudyUID,
    series_uid: SeriesUID,
    _: ImageReader,
    shown: ShownSeries,
    archive: ArchiveClient,
    source: Frames,
) -> Response:
    """WADO-RS Retrieve Series as bulk data (PS3.18: Accept multipart/related; type=application/octet-stream):
    every frame of the series in one answer, in display order (slice_order.py), each part named by its
    Content-Location. Orthanc's plugin offers no series bulk data; the viewport loads a series this way,
    from the platform's frame cache, instead of with one request per frame."""
    accept = request.headers.get("accept", "")
    # Unlike frames, a series' default answer is application/dicom: bulk data must be asked for by name.
    if "application/octet-stream" not in accept or frames_answer(accept) != EXPLICIT_LE:
        raise HTTPException(406, "A series is served as bulk data: Explicit VR Little Endian frames.")
    indexed = await archive.indexed_instances(study_uid, series_uid)
    if not indexed:
        raise HTTPException(404, "Not found in the archive.")
    ordered = in_display_order(
        indexed, indexed_place
    )  # the viewport's order: the slice shown first comes first
    instances = [InstanceFrames(study_uid, series_uid, item.instance_uid, item.frames) for item in ordered]
    boundary = secrets.token_hex(16)
    return StreamingResponse(
        series_bulk(source, instances, boundary),
        media_type=f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}; '
        f"boundary={boundary}",
        headers={"cache-control": "private, max-age=3600"},
    )


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/frames/{frames}")
async def frames(
    request: Request,
    study_uid: StudyUID,
    series_uid: SeriesUID,
    instance_uid: InstanceUID,
    frames: FrameList,
    _: ImageReader,
    shown: ShownSeries,
    archive: ArchiveClient,
    source: Frames,
) -> Response:
    answer = frames_answer(request.headers.get("accept", "*/*"))
    numbers = [int(number) for number in frames.split(",")]
    if answer == AS_STORED:
        path = f"/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/frames/{frames}"
        try:
            return await _forward(request, archive, path, pixels=True)
        except HTTPException as error:  # Orthanc 1.10 cannot serve big-endian frames as stored: cut here
            if error.status_code != 422 or await archive.stored_transfer_syntax(instance_uid) != BIG_ENDIAN:
                raise
        try:
            parts = await source.frames_from_file(study_uid, series_uid, instance_uid, numbers)
        except FrameError as error:
            raise HTTPException(error.status_code, str(error)) from error
        boundary = secrets.token_hex(16)
        return Response(
            multipart_body([part.data for part in parts], boundary, BIG_ENDIAN),
            media_type=f'multipart/related; type="application/octet-stream"; transfer-syntax={BIG_ENDIAN}; '
            f"boundary={boundary}",
            headers={"cache-control": "private, max-age=3600"},
        )
    if answer is None:
        raise HTTPException(
            406, "Frames are served as stored (transfer-syntax=*) or as Explicit VR Little Endian."
        )
    try:
        data = await source.frames(study_uid, series_uid, instance_uid, numbers)
    except FrameError as error:
        raise HTTPException(error.status_code, str(error)) from error
    except ArchiveError as error:
        raise HTTPException(502, str(error)) from error
    boundary = secrets.token_hex(16)
    return Response(
        multipart_body(data, boundary),
        media_type=f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}; '
        f"boundary={boundary}",
        headers={"cache-control": "private, max-age=3600"},  # the pixels of an instance UID never change
    )


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/rendered")
async def rendered(
    request: Request,
    study_uid: StudyUID,
    series_uid: SeriesUID,
    instance_uid: InstanceUID,
    _: ImageReader,
    shown: ShownSeries,
    archive: ArchiveClient,
    source: Frames,
) -> Response:
    """Orthanc renders, but only an image whose header the platform would decode itself: Orthanc 1.10
    crashed rendering a JPEG 2000 file that claimed 255 samples per pixel (a file stored by C-STORE never
    met the upload's checks)."""
    ds = await archive.instance_metadata(study_uid, series_uid, instance_uid)
    if ds is None:
        raise HTTPException(404, "Not found in the archive.")
    try:
        if "PixelData" not in ds:
            raise Undecodable("it has no pixel data")
        PixelFormat.from_dataset(ds).check_decodable(source.max_frame_bytes)
    except Undecodable as error:
        raise HTTPException(error.status_code, str(error)) from None
    path = f"/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/rendered"
    accept_type = rendered_media_type(request.headers.get("accept", "*/*"))
    return await _forward(request, archive, path, accept_type, pixels=True)


@router.post("/studies")
async def store(request: Request, _: Admin, archive: ArchiveClient, trail: Audit) -> Response:
    """STOW-RS. Every part is parsed first; if any is not valid DICOM, nothing is stored."""
    body = await request.body()  # at most Settings.max_upload_bytes (viewer/access/body_limits.py)
    try:
        files = read_upload(request.headers.get("content-type", ""), body)
    except UploadError as error:
        trail.record(
            audit.EventType.INSTANCES_TRANSFERRED,
            action=audit.Action.CREATE,
            outcome=audit.Outcome.MINOR_FAILURE,
            detail={"refused": str(error)},
        )
        return JSONResponse({"detail": str(error)}, status_code=error.status_code)
    stored = []
    for upload in files:
        try:
            response = await archive.store_instance(upload.data)
        except ArchiveError as error:
            raise HTTPException(502, str(error)) from error
        if response.status_code == 400:  # past the platform's checks, but Orthanc's parser says no
            raise HTTPException(400, f"The archive refused {upload.name} as invalid DICOM.")
        if response.status_code != 200:
            raise HTTPException(502, f"The archive refused {upload.name}: {response.status_code}")
        stored.append(upload)
    for study_uid in sorted({upload.study_uid for upload in stored}):
        trail.record(
            audit.EventType.INSTANCES_TRANSFERRED,
            action=audit.Action.CREATE,
            object_uid=study_uid,
            detail={"instances": sum(1 for u in stored if u.study_uid == study_uid)},
        )
    return JSONResponse(stow_response(stored), media_type="application/dicom+json")
