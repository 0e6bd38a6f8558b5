"""Frames for the canvas viewport: every frame as Explicit VR Little Endian bytes, from a bounded cache.

Orthanc is only ever asked for frames as stored (``transfer-syntax=*``): Orthanc 1.10.1 with the GDCM
plugin segfaults when asked to transcode some JPEG 2000 files (MR2_J2KR), taking the archive down for
everyone. Compressed frames are therefore decoded here, with pydicom (``viewer.reading.frame_encoding``),
which also makes one request per frame whatever the encoding. For the one codec pydicom lacks (12-bit JPEG
extended) Orthanc's transcoding is the fallback; it is never used for a JPEG 2000 syntax.

The pixels of an instance UID never change, so decoded frames are kept in an LRU bounded in bytes, and
the whole series is loaded in the background as soon as the viewport asks for its description.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydicom import dcmread

from viewer.archive.client import Archive, ArchiveError
from viewer.reading.bytes_lru import BytesLRU
from viewer.reading.frame_encoding import (
    AS_STORED,
    BIG_ENDIAN,
    EXPLICIT_LE,
    JPEG_2000,
    FrameError,
    FramePart,
    PixelFormat,
    needs_decoding,
    parse_multipart,
    part_head,
    to_explicit_le,
)

log = logging.getLogger(__name__)

FRAMES_PER_REQUEST = 32  # a multi-frame instance is loaded in chunks of this many frames
WARM_CONCURRENCY = 4  # requests in flight while a series is loaded in the background
FORMATS_KEPT = 100_000


def frame_location(instance: InstanceFrames, number: int) -> str:
    series = f"/dicomweb/studies/{instance.study_uid}/series/{instance.series_uid}"
    return f"{series}/instances/{instance.instance_uid}/frames/{number}"


async def series_bulk(
    source: FrameSource, instances: Sequence[InstanceFrames], boundary: str, lookahead: int = 8
) -> AsyncIterator[bytes]:
    """Every frame of the instances, in their order, as one multipart stream of bulk data parts.

    A few instances are loaded ahead of the one being sent. An instance that cannot be loaded is left
    out (a client fetches what it lacks frame by frame); its neighbours are still sent.
    """

    async def load(instance: InstanceFrames) -> list[bytes]:
        numbers = range(1, instance.frames + 1)
        return await source.frames(instance.study_uid, instance.series_uid, instance.instance_uid, numbers)

    ahead: deque[tuple[InstanceFrames, asyncio.Task[list[bytes]]]] = deque()
    queue = iter(instances)
    try:
        while True:
            while len(ahead) < lookahead and (instance := next(queue, None)) is not None:
                ahead.append((instance, asyncio.create_task(load(instance))))
            if not ahead:
                break
            instance, task = ahead.popleft()
            try:
                frames = await task
            except (FrameError, ArchiveError) as error:
                log.warning("series bulk data: an instance left out (%s)", error.__class__.__name__)
                continue
            for number, frame in enumerate(frames, start=1):
                yield part_head(boundary, frame_location(instance, number)) + frame + b"\r\n"
        yield f"--{boundary}--\r\n".encode()
    finally:  # the browser went away: stop loading for it
        for _, task in ahead:
            task.cancel()


@dataclass(frozen=True)
class InstanceFrames:
    """Where an instance lives and how many frames it has: what loading a whole series needs."""

    study_uid: str
    series_uid: str
    instance_uid: str
    frames: int


class FrameSource:
    """Frames in Explicit VR Little Endian: from the cache, or loaded from Orthanc once and shared by every
    request that wants them at the same time."""

    def __init__(self, archive: Archive, max_bytes: int) -> None:
        self.archive = archive
        self.cache: BytesLRU[tuple[str, int]] = BytesLRU(max_bytes)  # (instance UID, frame number)
        self._formats: OrderedDict[str, PixelFormat] = OrderedDict()
        self._loading: dict[tuple[str, int], asyncio.Future[bytes]] = {}
        self._warming: dict[str, asyncio.Task[None]] = {}

    def remember(self, instance_uid: str, fmt: PixelFormat) -> None:
        """Keep an instance's pixel format (learnt from series metadata) for decoding its frames."""
        self._formats[instance_uid] = fmt
        self._formats.move_to_end(instance_uid)
        while len(self._formats) > FORMATS_KEPT:
            self._formats.popitem(last=False)

    async def frames(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: Sequence[int]
    ) -> list[bytes]:
        found: dict[int, bytes] = {}
        waiting: dict[int, asyncio.Future[bytes]] = {}
        missing: list[int] = []
        for number in dict.fromkeys(numbers):
            key = (instance_uid, number)
            cached = self.cache.get(key)
            if cached is not None:
                found[number] = cached
            elif key in self._loading:
                waiting[number] = self._loading[key]
            else:
                missing.append(number)
        if missing:
            found.update(await self._load(study_uid, series_uid, instance_uid, missing))
        for number, future in waiting.items():
            found[number] = await asyncio.shield(future)
        return [found[number] for number in numbers]

    async def _load(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: list[int]
    ) -> dict[int, bytes]:
        loop = asyncio.get_running_loop()
        futures = {number: loop.create_future() for number in numbers}
        for number, future in futures.items():
            self._loading[(instance_uid, number)] = future
        try:
            parts = await self._fetch_as_stored(study_uid, series_uid, instance_uid, numbers)
            loaded = await self._decode(study_uid, series_uid, instance_uid, numbers, parts)
        except BaseException as error:
            for future in futures.values():
                if not future.done():
                    future.set_exception(
                        error if isinstance(error, Exception) else FrameError("cancelled", 503)
                    )
                    future.exception()  # retrieved: a failure nobody waited for is not logged as lost
            raise
        finally:
            for number in numbers:
                self._loading.pop((instance_uid, number), None)
        for number, data in loaded.items():
            self.cache.put((instance_uid, number), data)
            futures[number].set_result(data)
        return loaded

    async def _decode(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: list[int], parts: list[FramePart]
    ) -> dict[int, bytes]:
        fmt = self._formats.get(instance_uid)  # known once the viewport asked for the series' description
        if not any(needs_decoding(part.transfer_syntax, fmt.photometric if fmt else None) for part in parts):
            return dict(zip(numbers, (part.data for part in parts), strict=True))
        fmt = fmt or await self._format(study_uid, series_uid, instance_uid)
        try:
            decoded = await asyncio.to_thread(_decode_all, parts, fmt)
        except Exception as error:  # pydicom lacks a codec (12-bit JPEG extended), or corrupt data
            if any(part.transfer_syntax in JPEG_2000 for part in parts):
                raise FrameError(f"the frame could not be decoded: {error}", 502) from error
            log.info("pydicom could not decode %s (%s); Orthanc transcodes it", instance_uid, error)
            transcoded = await self._fetch(study_uid, series_uid, instance_uid, numbers, EXPLICIT_LE)
            decoded = [part.data for part in transcoded]
        return dict(zip(numbers, decoded, strict=True))

    async def _fetch_as_stored(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: list[int]
    ) -> list[FramePart]:
        """Orthanc 1.10 answers 500 to big-endian frames as stored: those are cut from the file here.
        (Asking Orthanc to transcode them crashed it once in a full test run, inside GDCM.)"""
        try:
            return await self._fetch(study_uid, series_uid, instance_uid, numbers, AS_STORED)
        except FrameError as error:
            if error.status_code != 502:
                raise
            stored = await self.archive.stored_transfer_syntax(instance_uid)
            if stored != BIG_ENDIAN:
                raise
            return await self._frames_from_file(study_uid, series_uid, instance_uid, numbers)

    async def _frames_from_file(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: list[int]
    ) -> list[FramePart]:
        """Native frames cut from the instance's file, in the file's own transfer syntax."""
        data = await self.archive.retrieve_instance(study_uid, series_uid, instance_uid)
        ds = await asyncio.to_thread(dcmread, io.BytesIO(data))
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        pixels = ds.get("PixelData") or b""
        if size <= 0 or max(numbers) * size > len(pixels):
            raise FrameError("Not found in the archive.", 404)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        return [FramePart(syntax, bytes(pixels[(n - 1) * size : n * size])) for n in numbers]

    async def _fetch(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: list[int], transfer_syntax: str
    ) -> list[FramePart]:
        response = await self.archive.fetch_frames(
            study_uid, series_uid, instance_uid, numbers, transfer_syntax
        )
        if response.status_code in (400, 404):
            raise FrameError("Not found in the archive.", 404)
        if response.status_code != 200:
            raise FrameError(f"The archive answered {response.status_code}.", 502)
        parts = parse_multipart(response.headers.get("content-type", ""), response.content)
        if len(parts) != len(numbers):
            raise FrameError(f"The archive answered {len(parts)} frames for {len(numbers)}.", 502)
        return parts

    async def _format(self, study_uid: str, series_uid: str, instance_uid: str) -> PixelFormat:
        ds = await self.archive.instance_metadata(study_uid, series_uid, instance_uid)
        if ds is None:
            raise FrameError("Not found in the archive.", 404)
        fmt = PixelFormat.from_dataset(ds)
        self.remember(instance_uid, fmt)
        return fmt

    def warm(self, series_uid: str, instances: Sequence[InstanceFrames]) -> asyncio.Task[None] | None:
        """Load a series' frames in the background, in display order, a few requests at a time.

        The viewport asks for every frame right after the series' description; by then most are here.
        """
        if series_uid in self._warming or not instances or self.cache.max_bytes == 0:
            return None
        task = asyncio.create_task(self._warm(instances), name=f"warm {series_uid}")
        self._warming[series_uid] = task
        task.add_done_callback(lambda _: self._warming.pop(series_uid, None))
        return task

    async def _warm(self, instances: Sequence[InstanceFrames]) -> None:
        chunks = [
            (item, list(range(first, min(first + FRAMES_PER_REQUEST, item.frames + 1))))
            for item in instances
            for first in range(1, item.frames + 1, FRAMES_PER_REQUEST)
        ]
        queue: asyncio.Queue[tuple[InstanceFrames, list[int]]] = asyncio.Queue()
        for chunk in chunks:
            queue.put_nowait(chunk)

        async def worker() -> None:
            while not queue.empty():
                item, numbers = queue.get_nowait()
                if all((item.instance_uid, n) in self.cache for n in numbers):
                    continue
                try:
                    await self.frames(item.study_uid, item.series_uid, item.instance_uid, numbers)
                except (FrameError, ArchiveError) as error:
                    log.info("background load of %s failed: %s", item.instance_uid, error)

        await asyncio.gather(*(worker() for _ in range(WARM_CONCURRENCY)))

    async def aclose(self) -> None:
        for task in list(self._warming.values()):
            task.cancel()
        await asyncio.gather(*self._warming.values(), return_exceptions=True)


def _decode_all(parts: list[FramePart], fmt: PixelFormat) -> list[bytes]:
    return [
        to_explicit_le(part, fmt) if needs_decoding(part.transfer_syntax, fmt.photometric) else part.data
        for part in parts
    ]


async def get_frame_source(request: Request) -> FrameSource:
    """The app's one frame source, made on first use for the app's current archive client."""
    state = request.app.state
    source: FrameSource | None = getattr(state, "frame_source", None)
    if source is None or source.archive is not state.archive:
        source = FrameSource(state.archive, state.settings.viewer_frame_cache_mb * 1024 * 1024)
        state.frame_source = source
    return source


Frames = Annotated[FrameSource, Depends(get_frame_source)]
